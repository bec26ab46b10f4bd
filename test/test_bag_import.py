"""`bitvla import-bag`: rosbag2 (MCAP and sqlite3) -> dataset, with the recorder's pairing and the
three ways of cutting episodes; clear errors for bags that lack what the import needs."""

import numpy as np
import pytest

from bag_helpers import ACTIONS, JOINTS, PARAMS, BagRecorder, action, image, state
from bitvla_ros.cli import main
from bitvla_ros.data import EpisodeDataset, chunked_samples
from bitvla_ros.ros.bag_import import BagError, import_bags


def assert_frames(frames, steps):
    """Each frame is the observation and command of its own step (nearest images, exact vectors)."""
    np.testing.assert_array_equal(frames.state, np.stack([state(k) for k in steps]).astype(np.float32))
    np.testing.assert_array_equal(frames.action, np.stack([action(k) for k in steps]).astype(np.float32))
    for t in (0, len(steps) - 1):
        for cam in ("agentview", "wrist"):
            assert np.abs(frames.image(cam, t).astype(int) - image(steps[t])).mean() < 4


def test_mcap_bag_split_by_the_episode_topic(tmp_path, report):
    bag = BagRecorder(tmp_path / "bag", "mcap", topics=("instruction", "episode"))
    bag.text("instruction", 0.5, "put the bowl on the plate")
    bag.text("episode", 0.9, "start")
    for k in range(10):
        bag.step(k, 1.0 + 0.1 * k)
    bag.text("episode", 2.05, "stop")
    bag.text("episode", 2.1, "start")
    for k in range(10, 14):
        bag.step(k, 2.2 + 0.1 * (k - 10))
    bag.text("episode", 2.65, "discard")
    bag.text("instruction", 2.7, "open the drawer")
    bag.text("episode", 2.75, "start")
    for k in range(20, 28):
        bag.step(k, 2.8 + 0.1 * (k - 20))
    bag.text("episode", 3.7, "stop")
    bag.step(99, 3.8)  # after the last stop: not recorded
    bag.close()
    result = import_bags([tmp_path / "bag"], {**PARAMS, "dataset_dir": str(tmp_path / "ds"), "episode_topic": "episode"},
                         split="topic", log=lambda *a: None)
    assert result.episodes == [(0, 10), (1, 8)] and result.discarded == 1
    report(f"import-bag (MCAP, action mode): {result.frames} frames from {result.messages} messages in "
           f"{result.seconds:.2f} s = {result.frames / result.seconds:.0f} frames/s")
    d = EpisodeDataset(tmp_path / "ds")
    assert d.version == "v3.0" and d.fps == 10 and d.camera_names == ["agentview", "wrist"]
    assert d.state_names == JOINTS and d.action_names == ACTIONS and d.action_mask == [True, False]
    assert [e.task for e in d.episodes] == ["put the bowl on the plate", "open the drawer"]
    assert_frames(d.frames(0), list(range(10)))
    assert_frames(d.frames(1), list(range(20, 28)))
    np.testing.assert_allclose(d.frames(0).timestamp, 0.1 + 0.1 * np.arange(10), atol=1e-5)  # since the start
    sample = chunked_samples([d], chunk=4)[0]  # what training takes
    assert len(sample["images"]) == 2 and sample["actions"].shape == (4, 2)


def test_sqlite3_bag_in_rate_mode_split_by_gaps(tmp_path):
    bag = BagRecorder(tmp_path / "bag", "sqlite3")
    bag.text("instruction", 0.0, "stack the blocks")
    for k in range(12):
        bag.step(k, 1.0 + 0.1 * k)
    for k in range(30, 40):  # after 3 s of silence: a second episode
        bag.step(k, 5.0 + 0.1 * k - 3.0)
    bag.close()
    params = {**PARAMS, "dataset_dir": str(tmp_path / "ds"), "sample_mode": "rate", "video": False}
    result = import_bags([tmp_path / "bag"], params, split="gap", gap_s=1.0, log=lambda *a: None)
    assert len(result.episodes) == 2
    d = EpisodeDataset(tmp_path / "ds")
    # The recorder's timer at 10 Hz from the first command: a frame per tick from the latest inputs,
    # until they are older than max_observation_age_s (0.5 s: up to 5 more frames of the last step).
    for e, first, n in zip(d.episodes, (0, 30), (12, 10)):
        frames = d.frames(e.index)
        assert n - 2 <= len(frames) <= n + 5
        steps = [int(round(s)) for s in frames.state[:, 0]]
        assert steps == sorted(steps) and steps[0] in (first, first + 1) and steps[-1] == first + n - 1
        assert len(set(steps)) >= n - 2
        for k, a in zip(steps, frames.action):  # the latest command: this step's, or the one before it
            assert any(np.array_equal(a, action(j).astype(np.float32)) for j in (k, k - 1)), (k, a)


def test_one_episode_per_bag_and_the_command(tmp_path, capsys):
    for i in range(2):
        bag = BagRecorder(tmp_path / f"bag{i}", "mcap" if i == 0 else "sqlite3", topics=())
        for k in range(6):
            bag.step(k + 10 * i, 1.0 + 0.1 * k)
        bag.close()
    args = ["import-bag", str(tmp_path / "bag0"), str(tmp_path / "bag1"), "--output", str(tmp_path / "ds"),
            "--instruction", "wipe the table", "--sample-mode", "action", "--rate", "10",
            "--image-topics", "agentview/image_raw", "wrist/image_raw/compressed",
            "--proprio-names", *JOINTS, "--action-names", *ACTIONS]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "imported 2 episodes, 12 frames from 2 bag(s)" in out and "frames/s" in out
    d = EpisodeDataset(tmp_path / "ds")
    assert [e.length for e in d.episodes] == [6, 6] and d.tasks == ["wipe the table"]
    assert_frames(d.frames(1), list(range(10, 16)))


def test_bags_that_lack_what_the_import_needs(tmp_path, capsys):
    bag = BagRecorder(tmp_path / "bag", "mcap", topics=())
    bag.step(0, 1.0)
    bag.close()
    params = {**PARAMS, "dataset_dir": str(tmp_path / "ds")}
    with pytest.raises(BagError, match=r"no topic /instruction \(std_msgs/msg/String, the instruction; or give it "
                                       r"with --instruction\); it has: /agentview/image_raw"):
        import_bags([tmp_path / "bag"], params)
    with pytest.raises(BagError, match=r"no topic /side/image_raw"):
        import_bags([tmp_path / "bag"], {**params, "image_topics": ["side/image_raw"]}, instruction="x")
    with pytest.raises(BagError, match=r"topic /joint_states is sensor_msgs/msg/JointState; expected "
                                       r"sensor_msgs/msg/Image \(camera\)"):
        import_bags([tmp_path / "bag"], {**params, "image_topics": ["joint_states"]}, instruction="x")
    with pytest.raises(BagError, match="expected std_msgs/msg/Float64MultiArray"):
        import_bags([tmp_path / "bag"], {**params, "action_type": "float64_multiarray"}, instruction="x")
    with pytest.raises(BagError, match="not_a_bag.*metadata"):
        import_bags([tmp_path / "not_a_bag"], params, instruction="x")
    assert main(["import-bag", str(tmp_path / "bag"), "--output", str(tmp_path / "ds2")]) == 2
    assert "bitvla import-bag:" in capsys.readouterr().err
