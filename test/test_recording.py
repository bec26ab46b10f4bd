"""The recorder's pure core: pairing observations with teleop actions into episodes (no rclpy)."""

import numpy as np
import pytest
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from bitvla_ros.data import DatasetWriter, EpisodeDataset
from bitvla_ros.data.recording import ACTION, RATE, RecordingSession
from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.ros.actions import action_from_message

CAMS, JOINTS = ["agentview", "wrist"], ["j0", "j1"]
IMG = np.full((8, 10, 3), 50, np.uint8)


def session(tmp_path, mode):
    return RecordingSession(lambda: DatasetWriter(tmp_path / "ds", fps=10, camera_names=CAMS, state_names=JOINTS,
                                                  action_names=["a", "b", "c"], image_format="png"),
                            CAMS, JOINTS, action_dim=3, max_age_s=0.5, mode=mode)


def observe(s, stamp, value=0.0):
    for c in CAMS:
        s.observations.put_image(c, IMG, stamp)
        s.on_observation(now=stamp)
    s.observations.put_joint_state(JOINTS, [value, value + 1], stamp)
    s.on_observation(now=stamp)


def test_rate_mode_samples_latest_inputs_and_skips_without_action(tmp_path):
    s = session(tmp_path, RATE)
    s.observations.set_instruction("put the bowl on the stove")
    s.start(now=0.0)
    observe(s, 0.0)
    assert not s.tick(0.05)  # no teleop action yet
    s.on_action([1, 2, 3], stamp=0.05, now=0.05)
    assert s.tick(0.1) and s.tick(0.2)
    assert not s.tick(0.9)  # stale observation
    index, frames = s.stop()
    assert (index, frames) == (0, 2)
    assert s.status()["skipped"] == {"no_action": 1, "stale": 1}
    ep = EpisodeDataset(tmp_path / "ds").frames(0)
    assert ep.task == "put the bowl on the stove" and ep.action.tolist() == [[1, 2, 3], [1, 2, 3]]


def test_action_mode_pairs_each_action_with_its_own_observation(tmp_path):
    s = session(tmp_path, ACTION)
    s.start(now=0.0, instruction="open the drawer")
    for t in range(4):
        observe(s, stamp=t * 0.05, value=t)
        assert s.on_action([t, t, t], stamp=t * 0.05, now=t * 0.05 + 0.01)
    # an action that arrives before its observation waits for it
    assert not s.on_action([9, 9, 9], stamp=0.2, now=0.2)
    observe(s, stamp=0.2, value=9)
    # the next observation may be handled before the action that answered the previous one
    observe(s, stamp=0.25, value=10)
    assert s.on_action([10, 10, 10], stamp=0.25, now=0.26)
    observe(s, stamp=0.35, value=11)
    assert s.on_action([11, 11, 11], stamp=0.35, now=0.36)  # 0.3's command: never seen
    # an action whose observation never came complete is dropped once a later one pairs
    assert not s.on_action([5, 5, 5], stamp=0.4, now=0.41)
    observe(s, stamp=0.45, value=12)
    assert s.on_action([12, 12, 12], stamp=0.45, now=0.46)
    assert s.status()["skipped"] == {"missed": 1}
    s.stop()
    ep = EpisodeDataset(tmp_path / "ds").frames(0)
    assert ep.state[:, 0].tolist() == [0, 1, 2, 3, 9, 10, 11, 12]
    assert ep.action[:, 0].tolist() == [0, 1, 2, 3, 9, 10, 11, 12]


def test_action_mode_assembles_observations_whose_topics_interleave(tmp_path):
    """Each topic arrives in order, but not the topics among themselves: under load the next
    step's first camera can be handled before this step's joints. Every step still pairs."""
    s = session(tmp_path, ACTION)
    s.start(now=0.0, instruction="open the drawer")
    wrist = lambda t: np.full((8, 10, 3), t, np.uint8)  # noqa: E731
    arrivals = [("agentview", 0), ("wrist", 0), ("agentview", 1), ("joints", 0), ("action", 0),
                ("wrist", 1), ("agentview", 2), ("wrist", 2), ("action", 1), ("joints", 1), ("joints", 2),
                ("action", 2)]
    for kind, t in arrivals:
        stamp = t * 0.05
        if kind == "action":
            s.on_action([t, t, t], stamp=stamp, now=stamp + 0.01)
            continue
        if kind == "joints":
            s.observations.put_joint_state(JOINTS, [t, t + 1], stamp)
        else:
            s.observations.put_image(kind, wrist(t) if kind == "wrist" else IMG, stamp)
        s.on_observation(now=stamp + 0.01)
    assert s.stop() == (0, 3) and s.status()["skipped"] == {}
    ep = EpisodeDataset(tmp_path / "ds").frames(0)
    assert ep.state[:, 0].tolist() == [0, 1, 2] and ep.action[:, 0].tolist() == [0, 1, 2]
    assert [int(ep.image("wrist", i)[0, 0, 0]) for i in range(3)] == [0, 1, 2]  # each step's own image
    assert np.allclose(ep.timestamp, [0.0, 0.05, 0.1])  # when each observation was taken


def test_action_mode_pairs_the_first_command_with_an_observation_handled_before_the_instruction(tmp_path):
    """A sim reset publishes the instruction and the first observation together; under load the
    recorder may handle the observation first. The first command still finds it."""
    s = session(tmp_path, ACTION)
    observe(s, stamp=1.0, value=7)
    s.observations.set_instruction("open the drawer")
    s.start(now=1.0)
    assert s.on_action([7, 7, 7], stamp=1.0, now=1.01)
    assert s.stop() == (0, 1)


def test_episode_errors_are_explained(tmp_path):
    s = session(tmp_path, RATE)
    with pytest.raises(RuntimeError, match="no instruction"):
        s.start(0.0)
    with pytest.raises(RuntimeError, match="no episode"):
        s.stop()
    s.start(0.0, instruction="go")
    with pytest.raises(RuntimeError, match="already being recorded"):
        s.start(0.0)
    with pytest.raises(RuntimeError, match="no frames"):
        s.stop()
    with pytest.raises(Rejected, match="size_mismatch"):
        s.on_action([1, 2], 0.0, 0.0)


def test_action_messages_to_vectors():
    traj = JointTrajectory(joint_names=["b", "a"], points=[JointTrajectoryPoint(positions=[2.0, 1.0])])
    traj.header.stamp.sec = 3
    assert action_from_message(traj, "joint_trajectory", ["a", "b"], now=9.0)[0].tolist() == [1.0, 2.0]
    assert action_from_message(traj, "joint_trajectory", ["a", "b"], now=9.0)[1] == 3.0
    js = JointState(name=["a", "b", "x"], position=[1.0, 2.0, 3.0])
    assert action_from_message(js, "joint_state", ["b", "a"], now=1.0)[0].tolist() == [2.0, 1.0]
    arr = Float64MultiArray(data=[1.0, 2.0])
    vec, stamp = action_from_message(arr, "float64_multiarray", [], now=5.0)
    assert vec.tolist() == [1.0, 2.0] and stamp == 5.0  # no header: stamped on arrival
    with pytest.raises(Rejected, match="unknown_joints"):
        action_from_message(js, "joint_state", ["a", "z"], now=1.0)
    with pytest.raises(Rejected, match="no points"):
        action_from_message(JointTrajectory(), "joint_trajectory", ["a"], now=1.0)
