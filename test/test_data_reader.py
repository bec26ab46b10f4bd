"""EpisodeDataset, ChunkedSamples and statistics, on datasets written by DatasetWriter."""

import json
import shutil

import numpy as np
import pytest
import torch

from bitvla_ros.data import ChunkedSamples, DatasetError, EpisodeDataset, compute_statistics, rebuild_meta
from bitvla_ros.model.normalize import NormStats
from data_helpers import CAMERAS, FPS, MASK, episode, make_writer, record

LENGTHS = [9, 12, 5, 8]  # episode 2 is shorter than a chunk of 8


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ds"
    with make_writer(root) as w:
        for seed, length in enumerate(LENGTHS):
            record(w, seed, length)
    return root


def raw(seed, length):
    frames = episode(seed, length)
    states = np.stack([s for _, s, _ in frames]).astype(np.float32)
    return states, np.stack([a for _, _, a in frames]).astype(np.float32), frames


def test_dataset_exposes_meta(root):
    d = EpisodeDataset(root)
    assert d.fps == FPS and d.camera_names == CAMERAS and len(d) == 4
    assert [e.length for e in d.episodes] == LENGTHS and d.num_frames == sum(LENGTHS)
    assert d.tasks == ["task 0", "task 1"] and d.episodes[3].task == "task 1"
    assert d.features["observation.state"]["shape"] == [8]
    assert d.name == "toy_no_noops" and d.action_mask == MASK
    numeric = d.frames(1, images=False)
    assert numeric.images == {} and numeric.state.shape == (12, 8) and numeric.action.dtype == np.float32
    with pytest.raises(IndexError, match="4 episodes"):
        d.frames(4)


def test_missing_meta_and_files_are_named(tmp_path, root):
    with pytest.raises(DatasetError, match="meta/info.json is missing"):
        EpisodeDataset(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "data/chunk-000/episode_000003.parquet").unlink()
    with pytest.raises(DatasetError, match=r"1 episode file\(s\) .* missing: .*episode_000003.parquet"):
        EpisodeDataset(copy)
    with pytest.raises(DatasetError, match=r"lists episodes \[3\].*rebuild_meta"):
        make_writer(copy)  # a writer refuses too, rather than quietly dropping the episode
    assert rebuild_meta(copy) == 3  # accepting the loss
    assert len(EpisodeDataset(copy)) == 3
    (copy / "data/chunk-000/episode_000001.parquet").unlink()
    with pytest.raises(DatasetError, match=r"episodes \[1\] are missing"):
        rebuild_meta(copy)
    (copy / "meta/tasks.jsonl").unlink()
    with pytest.raises(DatasetError, match="tasks.jsonl is missing"):
        EpisodeDataset(copy)
    info = json.loads((root / "meta/info.json").read_text())
    (copy / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v4.0"}))
    with pytest.raises(DatasetError, match="'v4.0'.*v3.0 and v2.1"):
        EpisodeDataset(copy)
    (copy / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v3.0"}))
    with pytest.raises(DatasetError, match="tasks.parquet is missing"):  # read as v3.0, which it is not
        EpisodeDataset(copy)


def test_chunked_samples_follow_oft(root):
    k = 8
    samples = ChunkedSamples(root, chunk=k)
    assert len(samples) == sum(max(n - k + 1, 0) for n in LENGTHS) == 2 + 5 + 0 + 1
    assert [samples.locate(i) for i in range(len(samples))] == \
        [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (3, 0)]
    item = samples[6]  # episode 1, t = 4: its last 8 actions exactly, no padding
    states, actions, frames = raw(1, 12)
    np.testing.assert_array_equal(item["actions"], actions[4:12])
    np.testing.assert_array_equal(item["state"], states[4])
    assert item["instruction"] == "task 1" and (item["episode_index"], item["frame_index"]) == (1, 4)
    for cam, image in zip(CAMERAS, item["images"]):
        np.testing.assert_array_equal(image, frames[4][0][cam])
    with pytest.raises(IndexError):
        samples[len(samples)]


def test_chunked_samples_options(root):
    padded = ChunkedSamples(root, chunk=8, pad_last=True)
    assert len(padded) == sum(LENGTHS)
    _, actions, _ = raw(2, 5)
    last = padded[len(padded) - LENGTHS[3] - 1]  # episode 2, t = 4: one real action, then repeats
    assert (last["episode_index"], last["frame_index"]) == (2, 4)
    np.testing.assert_array_equal(last["actions"], np.repeat(actions[4:5], 8, axis=0))

    subset = ChunkedSamples(root, chunk=4, episodes=[3, 1], camera_names=["wrist"])
    assert len(subset) == 5 + 9 and subset.locate(0) == (3, 0) and subset.locate(5) == (1, 0)
    item = subset[5]
    assert len(item["images"]) == 1
    np.testing.assert_array_equal(item["images"][0], raw(1, 12)[2][0][0]["wrist"])

    with pytest.raises(ValueError, match="pad_last=True"):
        ChunkedSamples(root, chunk=8, episodes=[2])
    with pytest.raises(ValueError, match="cameras .*'front'"):
        ChunkedSamples(root, camera_names=["front"])

    batch = next(iter(torch.utils.data.DataLoader(ChunkedSamples(root), batch_size=3, shuffle=True)))
    assert batch["actions"].shape == (3, 8, 7) and batch["images"][0].shape == (3, 32, 40, 3)


def test_statistics_match_numpy(root):
    states = np.concatenate([raw(s, n)[0] for s, n in enumerate(LENGTHS)]).astype(np.float64)
    actions = np.concatenate([raw(s, n)[1] for s, n in enumerate(LENGTHS)]).astype(np.float64)
    table = compute_statistics(EpisodeDataset(root))
    entry = table["toy_no_noops"]
    for key, x in (("action", actions), ("proprio", states)):
        np.testing.assert_allclose(entry[key]["mean"], x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(entry[key]["std"], x.std(0), rtol=1e-12)
        np.testing.assert_array_equal(entry[key]["min"], x.min(0))
        np.testing.assert_array_equal(entry[key]["max"], x.max(0))
        np.testing.assert_allclose(entry[key]["q01"], np.quantile(x, 0.01, axis=0), rtol=1e-12)
        np.testing.assert_allclose(entry[key]["q99"], np.quantile(x, 0.99, axis=0), rtol=1e-12)
    assert entry["action"]["mask"] == MASK and "mask" not in entry["proprio"]
    assert (entry["num_transitions"], entry["num_trajectories"]) == (sum(LENGTHS), 4)
    # the writer's own dataset_statistics.json says the same
    assert json.loads((root / "dataset_statistics.json").read_text()) == json.loads(json.dumps(table))


def test_statistics_options_and_normalization(root):
    table = compute_statistics(root, action_mask=[True] * 7, name="mine", episodes=[0, 1])
    entry = table["mine"]
    assert entry["action"]["mask"] == [True] * 7 and entry["num_transitions"] == 21
    with pytest.raises(ValueError, match="7 booleans"):
        compute_statistics(root, action_mask=[True])

    stats = NormStats.load(root / "dataset_statistics.json", "toy")  # resolves "toy_no_noops"
    _, actions, _ = raw(0, 9)
    normalized = stats.normalize_actions(actions)
    np.testing.assert_array_equal(normalized[:, 6], actions[:, 6])  # the gripper is left alone
    assert np.abs(normalized[:, :6]).max() <= 1
