"""DatasetWriter (LeRobot v3.0): files and columns as LeRobot lays them out, video frames, several
episodes per data file, appending, discarding, kill -9 and full-disk safety, recovery."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bitvla_ros.data import DatasetError, DatasetWriteError, DatasetWriter, EpisodeDataset, chunked_samples
from bitvla_ros.data.tools import convert
from data_helpers import (ACTION_NAMES, CAMERAS, FPS, MASK, STATE_NAMES, assert_episode_equal, episode, kill_at,
                          make_writer, no_space, record)



HERE = Path(__file__).resolve().parent


def v3_writer(root, **kw):
    return make_writer(root, "v3.0", **kw)


def snapshot(root: Path) -> dict[str, bytes]:
    root = Path(root)
    files = [*root.glob("meta/**/*"), root / "dataset_statistics.json"]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(files) if p.is_file()}


def assert_consistent(root: Path) -> dict:
    """info agrees with meta/episodes and the files; a writer opening it changes nothing; returns info."""
    root = Path(root)
    info = json.loads((root / "meta/info.json").read_text())
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    rows = sum(pq.read_metadata(p).num_rows for p in root.glob("data/*/*.parquet"))
    assert info["total_episodes"] == len(episodes)
    assert info["total_frames"] == sum(e["length"] for e in episodes) == rows
    for e in episodes:
        assert e["dataset_to_index"] - e["dataset_from_index"] == e["length"]
    assert not list(root.rglob("*.partial"))
    named = {(k.split("/")[1], e[k], e[k.replace("chunk_index", "file_index")]) for e in episodes for k in e
             if k.startswith("videos/") and k.endswith("/chunk_index")}
    assert len(list(root.glob("videos/*/*/*.mp4"))) == len(named)  # every video file is named, no other
    before = snapshot(root)
    with v3_writer(root, action_mask=None, dataset_name=None, video=bool(info["video_path"])):
        pass
    assert snapshot(root) == before
    return info


def test_video_round_trip_and_lerobot_files(tmp_path):
    root = tmp_path / "ds"
    with v3_writer(root) as w:
        assert [record(w, seed, 5 + seed) for seed in range(3)] == [0, 1, 2]
    d = EpisodeDataset(root)
    assert d.version == "v3.0" and [e.length for e in d.episodes] == [5, 6, 7] and d.tasks == ["task 0", "task 1"]
    for seed in range(3):
        assert_episode_equal(d, seed, seed, 5 + seed, tolerance=6)
    info = assert_consistent(root)
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 18, 2)
    assert info["data_files_size_in_mb"] == 100 and info["video_files_size_in_mb"] == 500
    cam = info["features"]["observation.images.wrist"]
    assert cam["dtype"] == "video" and cam["shape"] == [32, 40, 3] and cam["names"] == ["height", "width", "channels"]
    assert cam["info"]["video.codec"] == "h264" and cam["info"]["video.pix_fmt"] == "yuv420p"
    assert cam["info"]["video.fps"] == FPS and cam["info"]["has_audio"] is False
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [8], "names": STATE_NAMES}
    assert info["features"]["action"]["names"] == ACTION_NAMES

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")  # three episodes in one data file
    assert data.column("index").to_pylist() == list(range(18))
    assert data.column("episode_index").to_pylist() == [0] * 5 + [1] * 6 + [2] * 7
    assert data.column("frame_index").to_pylist()[5:8] == [0, 1, 2]
    np.testing.assert_allclose(data.column("timestamp").to_numpy()[:5], np.arange(5) / FPS, rtol=1e-6)
    assert "observation.images.wrist" not in data.column_names  # frames are in the clips
    assert data.schema.field("action").type == pa.list_(pa.float32(), 7)

    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert eps[1]["tasks"] == ["task 1"] and eps[1]["length"] == 6
    assert (eps[1]["dataset_from_index"], eps[1]["dataset_to_index"]) == (5, 11)
    assert (eps[2]["data/chunk_index"], eps[2]["data/file_index"]) == (0, 0)
    assert eps[2]["videos/observation.images.wrist/file_index"] == 0  # the three clips share one file
    assert eps[2]["videos/observation.images.wrist/from_timestamp"] == pytest.approx(1.1)  # after 5 + 6 frames
    assert eps[2]["videos/observation.images.wrist/to_timestamp"] == pytest.approx(1.8)
    assert sorted(p.name for p in root.glob("videos/*/*/*.mp4")) == ["file-000.mp4"] * 2
    assert eps[0]["meta/episodes/chunk_index"] == 0
    first = np.array([a for _, _, a in episode(0, 5)], np.float32).astype(np.float64)
    np.testing.assert_allclose(eps[0]["stats/action/mean"], first.mean(0), rtol=1e-9)
    assert np.asarray(eps[0]["stats/observation.images.wrist/mean"]).shape == (3, 1, 1)

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["task 0", "task 1"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # LeRobot: the task is the index
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [18] and np.asarray(stats["observation.images.agentview"]["std"]).shape == (3, 1, 1)
    assert json.loads((root / "dataset_statistics.json").read_text())["toy_no_noops"]["action"]["mask"] == MASK


def test_video_frames_read_in_any_order(tmp_path):
    root = tmp_path / "ds"
    _, state, action = episode(0, 1)[0]
    flat = [np.full((32, 40, 3), 12 * t, np.uint8) for t in range(20)]  # frames far apart: no neighbour is close
    with v3_writer(root, video_gop=4) as w:
        w.start_episode("flat")
        for im in flat:
            w.add_frame({cam: im for cam in CAMERAS}, state, action)
        w.save_episode()
    frames = EpisodeDataset(root).frames(0)
    in_order = [frames.image("wrist", t) for t in range(20)]
    nearest = [int(np.argmin([np.abs(im.astype(int) - f).mean() for f in flat])) for im in in_order]
    assert nearest == list(range(20))  # each decoded frame is its own, not a neighbour
    for t in [19, 0, 7, 8, 3, 15, 2, 2, 11]:  # seeking back and forth gives the same frames
        np.testing.assert_array_equal(frames.image("wrist", t), in_order[t])
    with pytest.raises(IndexError, match="out of range"):
        frames.image("wrist", 20)


def test_images_in_parquet_are_exact(tmp_path):
    root = tmp_path / "ds"
    with v3_writer(root, video=False) as w:
        record(w, 0, 4)
        record(w, 1, 3)
    d = EpisodeDataset(root)
    assert_episode_equal(d, 0, 0, 4)
    assert_episode_equal(d, 1, 1, 3)
    table = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert table.schema.field("observation.images.wrist").type == pa.struct([("bytes", pa.binary()),
                                                                             ("path", pa.string())])
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["observation.images.wrist"] == {
        "_type": "Image"}
    info = assert_consistent(root)
    assert info["video_path"] is None and info["features"]["observation.images.wrist"]["dtype"] == "image"
    assert not list(root.glob("videos/**/*.mp4"))


def test_a_full_data_file_starts_the_next(tmp_path):
    root = tmp_path / "ds"
    with v3_writer(root, data_file_mb=1e-6) as w:  # every file is "full" after one episode
        for seed in range(3):
            record(w, seed, 4 + seed)
    assert sorted(p.name for p in root.glob("data/chunk-000/*")) == ["file-000.parquet", "file-001.parquet",
                                                                     "file-002.parquet"]
    d = EpisodeDataset(root)
    for seed in range(3):
        assert_episode_equal(d, seed, seed, 4 + seed, tolerance=6)
    assert pq.read_table(root / "data/chunk-000/file-002.parquet").column("index").to_pylist() == [9, 10, 11, 12, 13, 14]
    assert_consistent(root)


def test_appends_and_refuses_other_features(tmp_path):
    root = tmp_path / "ds"
    with v3_writer(root) as w:
        record(w, 0, 4)
    with v3_writer(root, action_mask=None, dataset_name=None) as w:
        assert w.num_episodes == 1 and record(w, 1, 5) == 1
    d = EpisodeDataset(root)
    assert [e.length for e in d.episodes] == [4, 5] and d.name == "toy_no_noops" and d.action_mask == MASK
    assert_episode_equal(d, 1, 1, 5, tolerance=6)
    for change, words in [(dict(video=False), "stored as video"), (dict(fps=20), "fps"),
                          (dict(dataset_name="other"), "dataset_name")]:
        with pytest.raises(DatasetError, match=words):
            v3_writer(root, **change)
    with DatasetWriter.reopen(root) as w:
        assert w.num_episodes == 2
    assert_consistent(root)


def test_a_v21_dataset_is_not_appended_to(tmp_path):
    with make_writer(tmp_path / "old") as w:
        record(w, 0, 3)
    with pytest.raises(DatasetError, match="v2.1 dataset; convert it first with `bitvla dataset convert"):
        v3_writer(tmp_path / "old")


def test_discard_leaves_nothing(tmp_path):
    root = tmp_path / "ds"
    with v3_writer(root) as w:
        record(w, 0, 3)
        before = snapshot(root)
        w.start_episode("dropped")
        for frame in episode(2, 4):
            w.add_frame(*frame)
        assert list(root.rglob("*.partial"))  # the clips being written
        w.discard_episode()
        assert snapshot(root) == before and not list(root.rglob("*.partial"))
        w.start_episode("dropped by close")
        w.add_frame(*episode(2, 1)[0])
    assert snapshot(root) == before
    assert "dropped" not in EpisodeDataset(root).tasks
    assert_consistent(root)


# --- crashes and full disk ------------------------------------------------------------------------

@pytest.mark.parametrize("mode, finished", [
    ("add_frame", 2),       # killed while storing a frame of episode 3 (its clips half written)
    ("before_data", 2),     # clips in place, the data file rewritten under its temp name
    ("after_data", 2),      # the data file holds episode 3's rows, meta/episodes does not name them yet
    ("after_episodes", 3),  # committed; stats and info.json not yet updated
])
def test_kill_9_loses_at_most_the_episode_in_progress(tmp_path, mode, finished):
    root = tmp_path / "ds"
    kill_at(mode, root, "v3.0")

    d = EpisodeDataset(root)  # a reader copes before any writer has recovered
    assert len(d) == finished
    assert_episode_equal(d, 1, 1, 10, tolerance=6)
    if mode == "after_data":
        assert pq.read_metadata(root / "data/chunk-000/file-000.parquet").num_rows == 30  # rows past the commit

    with v3_writer(root) as w:  # recovery: temp files, stray rows and clips gone
        assert w.num_episodes == finished
        record(w, 7, 4, task="after the crash")
    d = EpisodeDataset(root)
    assert len(d) == finished + 1
    assert_episode_equal(d, 0, 0, 9, tolerance=6)
    if finished == 3:
        assert_episode_equal(d, 2, 2, 11, tolerance=6)
    assert_episode_equal(d, finished, 7, 4, tolerance=6)
    assert d.episodes[finished].task == "after the crash"
    assert_consistent(root)


@pytest.mark.parametrize("part, then", [("data/", "retry"), ("meta/episodes", "retry"), ("meta/episodes", "discard"),
                                        ("videos/", "retry"), ("videos/", "discard")])
def test_full_disk_then_retry_or_discard(tmp_path, monkeypatch, part, then):
    root = tmp_path / "ds"
    w = v3_writer(root)
    record(w, 0, 4)
    before = snapshot(root)
    w.start_episode("task 1")
    for frame in episode(1, 5):
        w.add_frame(*frame)
    monkeypatch.setattr(os, "replace", no_space(lambda dst: part in dst))
    with pytest.raises(DatasetWriteError, match="ENOSPC") as info:
        w.save_episode()
    assert part.rstrip("/") in str(info.value)
    assert w.recording and len(EpisodeDataset(root)) == 1  # readers still see the finished episode only
    if part == "meta/episodes":  # tasks.parquet goes before the commit: the new task is listed, unused
        before.pop("meta/tasks.parquet")
        assert EpisodeDataset(root).tasks == ["task 0", "task 1"]
    assert {k: v for k, v in snapshot(root).items() if k in before} == before
    monkeypatch.undo()
    if then == "retry":
        assert w.save_episode() == 1
    else:
        w.discard_episode()
    w.close()
    d = EpisodeDataset(root)
    assert len(d) == (2 if then == "retry" else 1)
    if then == "retry":
        assert_episode_equal(d, 1, 1, 5, tolerance=6)
    assert_consistent(root)


def test_dataset_convert_and_info_commands(tmp_path, capsys):
    from bitvla_ros.cli import main

    with make_writer(tmp_path / "old") as w:  # v2.1, PNG
        record(w, 0, 5)
        record(w, 1, 6)
    assert main(["dataset", "convert", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    assert main(["dataset", "convert", str(tmp_path / "old"), str(tmp_path / "new")]) == 2  # not over a dataset
    assert "not empty" in capsys.readouterr().err
    d = EpisodeDataset(tmp_path / "new")
    assert d.version == "v3.0" and d.name == "toy_no_noops" and d.action_mask == MASK and d.tasks == ["task 0", "task 1"]
    assert_episode_equal(d, 1, 1, 6, tolerance=6)
    assert_consistent(tmp_path / "new")
    assert main(["dataset", "convert", str(tmp_path / "old"), str(tmp_path / "flat"), "--no-video"]) == 0
    assert_episode_equal(EpisodeDataset(tmp_path / "flat"), 0, 0, 5)  # PNG stays lossless
    capsys.readouterr()
    assert main(["dataset", "info", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "LeRobot v3.0, 2 episodes, 11 frames at 10 fps" in out
    assert "observation.images.wrist: video [32, 40, 3]  (h264, yuv420p)" in out and "1: 'task 1' (1 episodes)" in out
    assert main(["dataset", "info", str(tmp_path / "nothing")]) == 2
    assert "meta/info.json is missing" in capsys.readouterr().err


def test_rebuild_meta_rewrites_what_follows_from_the_episode_list(tmp_path):
    from bitvla_ros.data import rebuild_meta

    root = tmp_path / "ds"
    with v3_writer(root, video_codec="libsvtav1") as w:
        for seed in range(2):
            record(w, seed, 4)
    before = snapshot(root)
    for rel in ("meta/stats.json", "meta/info.json", "meta/tasks.parquet", "dataset_statistics.json"):
        (root / rel).unlink() if rel != "meta/info.json" else (root / rel).write_text(
            json.dumps({**json.loads((root / rel).read_text()), "total_frames": 0}))
    assert rebuild_meta(root) == 2
    assert snapshot(root) == before
    assert EpisodeDataset(root).features["observation.images.wrist"]["info"]["video.codec"] == "av1"
    assert_episode_equal(EpisodeDataset(root), 1, 1, 4, tolerance=8)


def test_a_one_wide_vector_is_a_plain_column(tmp_path):
    """LeRobot stores a feature of shape (1,) as a scalar column, not a list of one."""
    images, state, action = episode(0, 1)[0]
    with v3_writer(tmp_path / "ds", action_names=["gripper"], action_mask=[False]) as w:
        w.start_episode("grip")
        for a in (0.0, 1.0, 1.0):
            w.add_frame(images, state, [a])
        w.save_episode()
    table = pq.read_table(tmp_path / "ds/data/chunk-000/file-000.parquet")
    assert table.schema.field("action").type == pa.float32()
    hf = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["action"] == {"dtype": "float32", "_type": "Value"}
    np.testing.assert_array_equal(EpisodeDataset(tmp_path / "ds").frames(0).action, [[0.0], [1.0], [1.0]])


def test_reads_a_dataset_lerobot_wrote(tmp_path):
    """LeRobot 0.6.1's own output (made by bench/lerobot_fixture.py): AV1, several episodes per MP4,
    no recorded_time; frames as LeRobot decodes them, and it converts and trains."""
    fixtures = HERE / "fixtures"
    d = EpisodeDataset(fixtures / "lerobot_v30")
    assert d.version == "v3.0" and [e.length for e in d.episodes] == [15, 16, 17]
    assert d.tasks == ["task 0", "task 1"] and [e.task for e in d.episodes] == ["task 0", "task 1", "task 0"]
    assert d.features["observation.images.cam"]["info"]["video.codec"] == "av1"
    expected = np.load(fixtures / "lerobot_v30_frames.npz")
    for e in range(3):
        f = d.frames(e)
        np.testing.assert_array_equal(f.state[:, 0], e)
        np.testing.assert_allclose(f.timestamp, np.arange(len(f)) / 10, atol=1e-6)  # no recorded_time: the clock
        for t in (0, 7):
            np.testing.assert_array_equal(f.image("cam", t), expected[f"{e}_{t}"])  # the later episodes start mid-file
    sample = chunked_samples([d], chunk=4)[20]
    assert sample["images"][0].shape == (48, 64, 3) and sample["actions"].shape == (4, 2)
    convert(fixtures / "lerobot_v30", tmp_path / "ours", log=lambda *a: None)
    ours = EpisodeDataset(tmp_path / "ours")
    assert [e.length for e in ours.episodes] == [15, 16, 17]
    assert np.abs(ours.frames(2).image("cam", 7).astype(int) - expected["2_7"]).mean() < 4  # now H.264


def test_open_clips_are_bounded_by_their_size(tmp_path):
    from bitvla_ros.data.video import ClipCache

    root = tmp_path / "ds"
    with v3_writer(root) as w:
        for seed in range(3):
            record(w, seed, 6)
    clips = sorted(root.glob("videos/*/*/*.mp4"))
    cache = ClipCache(max_bytes=1)  # room for one clip only
    first = cache.get(clips[0])
    assert cache.get(clips[0]) is first  # kept while it is the one in use
    cache.get(clips[1])
    assert cache.get(clips[0]) is not first  # dropped for the next, opened again
    reader = ClipCache().get(clips[0])
    before = reader.nbytes
    frame = reader.frame(0.1)
    assert reader.nbytes == before + frame.nbytes  # the decoded frame is kept (training reads it again)
    frame[:] = 0  # callers get copies: changing one leaves the kept frame as it was
    assert reader.frame(0.1).any()
    frames = EpisodeDataset(root).frames(2)
    assert_episode_equal(EpisodeDataset(root), 2, 2, 6, tolerance=6)
    assert len(frames.images["wrist"]) == 6


def test_a_full_video_file_starts_the_next(tmp_path):
    root = tmp_path / "ds"
    with v3_writer(root, video_file_mb=1e-6) as w:  # every video file is "full" after one clip
        for seed in range(3):
            record(w, seed, 4 + seed)
    assert sorted(p.name for p in root.glob("videos/observation.images.wrist/chunk-000/*")) == [
        "file-000.mp4", "file-001.mp4", "file-002.mp4"]
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["videos/observation.images.wrist/from_timestamp"] for e in eps] == [0.0, 0.0, 0.0]
    d = EpisodeDataset(root)
    for seed in range(3):
        assert_episode_equal(d, seed, seed, 4 + seed, tolerance=6)
    assert json.loads((root / "meta/info.json").read_text())["video_files_size_in_mb"] == 1e-6
    assert_consistent(root)
