"""DatasetWriter: round trips, LeRobot v2.1 meta, appending, discarding, validation, crashes, full disk."""

import errno
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bitvla_ros.data import DatasetError, DatasetWriteError, EpisodeDataset, rebuild_meta
from data_helpers import (ACTION_NAMES, FPS, MASK, STATE_NAMES, assert_consistent, assert_episode_equal, episode, kill_at,
                          make_writer, meta_snapshot, no_space, record)


def test_png_round_trip_is_exact_and_meta_is_consistent(tmp_path):
    with make_writer(tmp_path / "ds") as w:
        assert [record(w, seed, 5 + seed) for seed in range(3)] == [0, 1, 2]
        assert (w.num_episodes, w.num_frames) == (3, 18)
    d = EpisodeDataset(tmp_path / "ds")
    for seed in range(3):
        assert_episode_equal(d, seed, seed, 5 + seed)
    info = assert_consistent(tmp_path / "ds")
    assert info["codebase_version"] == "v2.1" and info["chunks_size"] == 1000 and info["fps"] == FPS
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 18, 2)
    feats = info["features"]
    assert feats["observation.images.wrist"] == {"dtype": "image", "shape": [32, 40, 3],
                                                 "names": ["height", "width", "channel"]}
    assert feats["observation.state"] == {"dtype": "float32", "shape": [8], "names": STATE_NAMES}
    assert feats["action"]["names"] == ACTION_NAMES
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(feats)
    rows = [json.loads(x) for x in (tmp_path / "ds/meta/episodes.jsonl").read_text().splitlines()]
    assert rows[2] == {"episode_index": 2, "tasks": ["task 0"], "length": 7}
    assert d.tasks == ["task 0", "task 1"]


def test_parquet_columns_follow_lerobot(tmp_path):
    with make_writer(tmp_path / "ds") as w:
        record(w, 0, 4)
        record(w, 1, 3)
    table = pq.read_table(tmp_path / "ds/data/chunk-000/episode_000001.parquet")
    assert table.schema.field("observation.images.agentview").type == pa.struct([("bytes", pa.binary()),
                                                                                  ("path", pa.string())])
    assert table.column("observation.images.agentview").combine_chunks().field("path").null_count == 3
    assert table.schema.field("action").type == pa.list_(pa.float32(), 7)
    assert table.column("index").to_pylist() == [4, 5, 6]  # global frame index continues over episodes
    assert table.column("episode_index").to_pylist() == [1, 1, 1]
    assert table.column("task_index").to_pylist() == [1, 1, 1]
    hf = json.loads(table.schema.metadata[b"huggingface"])
    assert hf["info"]["features"]["observation.images.wrist"] == {"_type": "Image"}


def test_jpeg_is_default_and_close(tmp_path):
    with make_writer(tmp_path / "ds", image_format="jpeg") as w:
        record(w, 0, 4)
    data = pq.read_table(tmp_path / "ds/data/chunk-000/episode_000000.parquet")
    assert data.column("observation.images.wrist")[0]["bytes"].as_py()[:2] == b"\xff\xd8"  # JPEG magic
    assert_episode_equal(EpisodeDataset(tmp_path / "ds"), 0, 0, 4, tolerance=3)


def test_stats_files_match_numpy(tmp_path):
    with make_writer(tmp_path / "ds") as w:
        for seed in range(3):
            record(w, seed, 6 + seed)
    root = tmp_path / "ds"
    actions = np.concatenate([[a for _, _, a in episode(s, 6 + s)] for s in range(3)]).astype(np.float32)
    per_episode = [json.loads(x) for x in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    first = np.array([a for _, _, a in episode(0, 6)], np.float32).astype(np.float64)
    np.testing.assert_allclose(per_episode[0]["stats"]["action"]["std"], first.std(0), rtol=1e-9)
    stats = json.loads((root / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], actions.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], actions.astype(np.float64).std(0), rtol=1e-9)
    assert stats["action"]["count"] == [21] and stats["index"]["max"] == [20]
    table = json.loads((root / "dataset_statistics.json").read_text())
    entry = table["toy_no_noops"]
    np.testing.assert_allclose(entry["action"]["q01"], np.quantile(actions.astype(np.float64), 0.01, axis=0))
    assert entry["action"]["mask"] == MASK
    assert (entry["num_transitions"], entry["num_trajectories"]) == (21, 3)


def test_appends_across_writer_instances(tmp_path):
    root = tmp_path / "ds"
    with make_writer(root) as w:
        record(w, 0, 4)
    with make_writer(root, action_mask=None, dataset_name=None) as w:  # None keeps the dataset's own
        assert w.num_episodes == 1
        assert record(w, 1, 5) == 1
    d = EpisodeDataset(root)
    assert [e.length for e in d.episodes] == [4, 5]
    assert_episode_equal(d, 1, 1, 5)
    assert d.name == "toy_no_noops" and d.action_mask == MASK
    assert_consistent(root)


@pytest.mark.parametrize("change, words", [
    (dict(camera_names=["wrist", "agentview"]), "camera_names"),
    (dict(state_names=STATE_NAMES[:7]), "state_names"),
    (dict(fps=20), "fps"),
    (dict(robot_type="ur5"), "robot_type"),
    (dict(action_mask=[True] * 7), "action_mask"),
    (dict(dataset_name="other"), "dataset_name"),
])
def test_append_refuses_different_features(tmp_path, change, words):
    with make_writer(tmp_path / "ds") as w:
        record(w, 0, 3)
    with pytest.raises(DatasetError, match=words):
        make_writer(tmp_path / "ds", **change)
    with make_writer(tmp_path / "ds") as w:  # the refused writer released the lock
        assert w.num_episodes == 1


def test_discard_leaves_nothing(tmp_path):
    root = tmp_path / "ds"
    with make_writer(root) as w:
        w.start_episode("nothing to keep")
        w.add_frame(*episode(0, 1)[0])
        w.discard_episode()
        assert not w.recording and w.num_episodes == 0
        assert not list(root.glob("data/*/*"))
        record(w, 1, 3)
        before = meta_snapshot(root)
        w.start_episode("dropped")
        for frame in episode(2, 4):
            w.add_frame(*frame)
        w.discard_episode()
        assert meta_snapshot(root) == before
        w.start_episode("dropped by close")
        w.add_frame(*episode(2, 1)[0])
    assert meta_snapshot(root) == before
    assert len(list(root.glob("data/*/*"))) == 1
    with pytest.raises(RuntimeError, match="closed"):
        w.start_episode("too late")
    assert "dropped" not in EpisodeDataset(root).tasks


def test_image_shape_is_fixed_per_camera(tmp_path):
    images, state, action = episode(0, 1)[0]
    with make_writer(tmp_path / "ds") as w:
        w.start_episode("a")
        w.add_frame(images, state, action)
        small = {**images, "wrist": images["wrist"][:16]}
        with pytest.raises(ValueError, match=r"camera 'wrist': image shape \(16, 40, 3\).*\(32, 40, 3\)"):
            w.add_frame(small, state, action)
        w.save_episode()
    with make_writer(tmp_path / "ds") as w:  # the shape on disk holds for later writers too
        w.start_episode("b")
        with pytest.raises(ValueError, match="image shape"):
            w.add_frame(small, state, action)


def test_add_frame_validation(tmp_path):
    images, state, action = episode(0, 1)[0]
    with make_writer(tmp_path / "ds") as w:
        with pytest.raises(RuntimeError, match="start_episode"):
            w.add_frame(images, state, action)
        with pytest.raises(ValueError, match="instruction"):
            w.start_episode("  ")
        w.start_episode("a")
        with pytest.raises(RuntimeError, match="already in progress"):
            w.start_episode("b")
        with pytest.raises(ValueError, match="has no frames"):
            w.save_episode()
        bad = [
            ({"agentview": images["agentview"]}, state, action, r"one image per camera \['agentview', 'wrist'\]"),
            ({**images, "wrist": images["wrist"].astype(np.float32)}, state, action, "HxWx3 uint8"),
            ({**images, "wrist": images["wrist"][:, :, 0]}, state, action, "HxWx3 uint8"),
            (images, state[:7], action, r"state has shape \(7,\); expected \(8,\)"),
            (images, state, np.append(action[:6], np.nan), r"not finite .* \['gripper'\]"),
            (images, state, np.full(7, 1e39), "beyond float32 range"),
            (images, ["a"] * 8, action, "expected numbers"),
        ]
        for imgs, s, a, message in bad:
            with pytest.raises(ValueError, match=message):
                w.add_frame(imgs, s, a)
        assert w.frames_in_episode == 0  # refused frames leave nothing behind
        w.add_frame(images, state.tolist(), action, timestamp=0.25)
        w.save_episode()
    assert EpisodeDataset(tmp_path / "ds").frames(0).timestamp[0] == np.float32(0.25)


def test_constructor_validation(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        make_writer(tmp_path / "a", fps=0)
    with pytest.raises(ValueError, match="camera_names"):
        make_writer(tmp_path / "a", camera_names=["x", "x"])
    with pytest.raises(ValueError, match="action_mask .* 7 booleans"):
        make_writer(tmp_path / "a", action_mask=[True] * 6)
    with pytest.raises(ValueError, match="image_format"):
        make_writer(tmp_path / "a", image_format="webp")
    (tmp_path / "b").mkdir()
    (tmp_path / "b/notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty .*notes.txt"):
        make_writer(tmp_path / "b")


def test_one_writer_at_a_time(tmp_path):
    with make_writer(tmp_path / "ds"):
        with pytest.raises(RuntimeError, match="another DatasetWriter"):
            make_writer(tmp_path / "ds")


# --- crashes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, finished", [
    ("add_frame", 2),       # killed while encoding a frame of episode 3
    ("before_data", 2),     # episode 3's file written under its temp name, not yet renamed
    ("after_data", 3),      # renamed into place, meta not yet updated: adopted on open
    ("after_episodes", 3),  # episodes.jsonl updated, info.json and the statistics not yet
])
def test_kill_9_loses_at_most_the_episode_in_progress(tmp_path, mode, finished):
    root = tmp_path / "ds"
    kill_at(mode, root)
    if mode == "before_data":
        assert list(root.glob("data/*/*.partial"))

    d = EpisodeDataset(root)  # a reader copes before any writer has recovered
    assert len(d) == (3 if mode == "after_episodes" else 2)
    assert_episode_equal(d, 1, 1, 10)

    with make_writer(root) as w:  # recovery: temp files gone, a landed episode adopted
        assert w.num_episodes == finished
        record(w, 7, 4, task="after the crash")
    d = EpisodeDataset(root)
    assert len(d) == finished + 1
    assert_episode_equal(d, 0, 0, 9)
    if finished == 3:
        assert_episode_equal(d, 2, 2, 11)
    assert_episode_equal(d, finished, 7, 4)
    assert d.episodes[finished].task == "after the crash"
    assert_consistent(root)


# --- full disk, unwritable roots --------------------------------------------------------------------

def test_full_disk_on_the_episode_file_then_retry(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    w = make_writer(root)
    record(w, 0, 4)
    before = meta_snapshot(root)
    w.start_episode("task 1")
    for frame in episode(1, 5):
        w.add_frame(*frame)
    monkeypatch.setattr(os, "replace", no_space())
    with pytest.raises(DatasetWriteError) as info:
        w.save_episode()
    message = str(info.value)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert "episode_000001.parquet" in message and "ENOSPC" in message and "No space left" in message
    assert "save_episode() again" in message
    assert not list(root.rglob("*.partial")) and meta_snapshot(root) == before
    assert w.recording  # frames kept for a retry
    assert_episode_equal(EpisodeDataset(root), 0, 0, 4)

    monkeypatch.undo()
    assert w.save_episode() == 1
    w.close()
    assert_episode_equal(EpisodeDataset(root), 1, 1, 5)
    assert_consistent(root)


def test_full_disk_while_the_file_is_being_written(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    with make_writer(root) as w:
        record(w, 0, 3)
        w.start_episode("task 1")
        w.add_frame(*episode(1, 1)[0])

        def half_written(table, f):
            f.write(b"PAR1 and then the disk was full")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(pq, "write_table", half_written)
        with pytest.raises(DatasetWriteError, match="No space left"):
            w.save_episode()
        assert not list(root.rglob("*.partial"))
        monkeypatch.undo()
        w.save_episode()
    assert len(EpisodeDataset(root)) == 2


@pytest.mark.parametrize("then", ["retry", "discard"])
def test_full_disk_on_meta_after_the_episode_file_landed(tmp_path, monkeypatch, then):
    root = tmp_path / "ds"
    w = make_writer(root)
    record(w, 0, 4)
    w.start_episode("task 1")
    for frame in episode(1, 5):
        w.add_frame(*frame)
    monkeypatch.setattr(os, "replace", no_space(lambda dst: f"{os.sep}meta{os.sep}" in dst))
    with pytest.raises(DatasetWriteError, match=r"meta/.*ENOSPC"):
        w.save_episode()
    assert len(EpisodeDataset(root)) == 1  # readers still see the finished episode only
    monkeypatch.undo()
    if then == "retry":
        assert w.save_episode() == 1
    else:
        w.discard_episode()
    w.close()
    assert len(EpisodeDataset(root)) == (2 if then == "retry" else 1)
    assert_consistent(root)


def test_unusable_roots(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DatasetWriteError, match=r"a_file/ds.*ENOTDIR.*regular file"):
        make_writer(blocker / "ds")
    with pytest.raises(DatasetWriteError, match="a_file.*EEXIST"):
        make_writer(blocker)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_root(tmp_path):
    root = tmp_path / "ro"
    root.mkdir(mode=0o500)
    try:
        with pytest.raises(DatasetWriteError, match="EACCES"):
            make_writer(root)
    finally:
        root.chmod(0o700)


def test_rebuild_meta_from_the_episode_files(tmp_path):
    root = tmp_path / "ds"
    with make_writer(root) as w:
        for seed in range(3):
            record(w, seed, 3 + seed)
    before = meta_snapshot(root)
    for p in root.glob("meta/*"):
        p.unlink()
    (root / "dataset_statistics.json").unlink()
    assert rebuild_meta(root) == 3
    assert meta_snapshot(root) == before
