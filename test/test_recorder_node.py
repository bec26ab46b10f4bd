"""recorder_node in its own process over real DDS: episodes via services and the episode topic,
load back; kill -9 mid-episode loses only that episode; an unusable folder is a clear error."""

import os
import signal

import pytest

from ros_helpers.fake_robot import FakeRobot
from ros_helpers.harness import NodeProcess, call
from bitvla_ros.data import EpisodeDataset

CAMERAS = ["agentview/image_raw", "wrist/image_raw/compressed"]
PROPRIO = [f"p{i}" for i in range(8)]
ACTIONS = ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]


def params(dataset_dir, **overrides):
    return {"dataset_dir": str(dataset_dir), "image_topics": CAMERAS, "proprio_names": PROPRIO,
            "action_topic": "teleop/joint_command", "action_type": "joint_trajectory", "action_names": ACTIONS,
            "action_mask": [True] * 6 + [False], "record_rate_hz": 10.0, "max_observation_age_s": 1.0,
            "episode_topic": "episode", "image_size": 32} | overrides


@pytest.fixture
def robot(rclpy_context):
    r = FakeRobot(rclpy_context, CAMERAS, PROPRIO, teleop_topic="teleop/joint_command")
    yield r
    r.close()


def trigger(robot, service):
    from std_srvs.srv import Trigger

    client = robot.node.create_client(Trigger, f"/bitvla_recorder/{service}")
    return call(robot.executor, client, Trigger.Request())


def record_episode(robot, instruction, seconds=1.0, via_topic=False):
    from std_msgs.msg import String

    robot.instruct(instruction)
    robot.spin_for(0.5)
    if via_topic:
        pub = robot.node.create_publisher(String, "episode", 10)
        robot.spin_for(0.5)
        pub.publish(String(data="start"))
        robot.spin_for(seconds)
        pub.publish(String(data="stop"))
        robot.spin_for(1.0)
        return None
    for _ in range(20):  # the latched instruction may take a moment to reach a node just started
        res = trigger(robot, "start_episode")
        if res.success or "no instruction" not in res.message:
            break
        robot.spin_for(0.5)
    assert res.success, res.message
    robot.spin_for(seconds)
    res = trigger(robot, "stop_episode")
    assert res.success, res.message
    return res.message


def test_records_episodes_that_load_back(robot, tmp_path):
    ds = tmp_path / "ds"
    with NodeProcess("bitvla_ros.ros.recorder_node", "bitvla_recorder", params(ds), tmp_path) as proc:
        assert robot.wait_for_node("bitvla_recorder"), proc.log()
        assert "saved episode 0" in record_episode(robot, "put the bowl on the stove")
        assert "saved episode 1" in record_episode(robot, "open the drawer")
        record_episode(robot, "turn on the stove", via_topic=True)
        res = trigger(robot, "start_episode")
        assert res.success
        robot.spin_for(0.5)
        assert trigger(robot, "discard_episode").success
        assert proc.alive(), proc.log()
    dataset = EpisodeDataset(ds)
    assert [e.task for e in dataset.episodes] == ["put the bowl on the stove", "open the drawer", "turn on the stove"]
    for e in dataset.episodes:
        frames = dataset.frames(e.index)
        assert e.length >= 5 and frames.state.shape == (e.length, 8) and frames.action.shape == (e.length, 7)
        assert frames.image("agentview", 0).shape == (32, 32, 3)
        assert (frames.action[1:, 0] >= frames.action[:-1, 0]).all()  # teleop commands count up
    assert dataset.action_mask == [True] * 6 + [False]
    assert (ds / "dataset_statistics.json").is_file()


def test_kill_9_mid_episode_loses_only_that_episode(robot, tmp_path):
    ds = tmp_path / "ds"
    with NodeProcess("bitvla_ros.ros.recorder_node", "bitvla_recorder", params(ds), tmp_path) as proc:
        assert robot.wait_for_node("bitvla_recorder"), proc.log()
        record_episode(robot, "put the bowl on the stove")
        record_episode(robot, "open the drawer")
        assert trigger(robot, "start_episode").success
        robot.spin_for(1.0)
        os.kill(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(10)
    assert [e.task for e in EpisodeDataset(ds).episodes] == ["put the bowl on the stove", "open the drawer"]
    # a new recorder appends after the crash
    with NodeProcess("bitvla_ros.ros.recorder_node", "bitvla_recorder", params(ds), tmp_path / "restart") as proc:
        assert robot.wait_for_node("bitvla_recorder"), proc.log()
        assert "saved episode 2" in record_episode(robot, "turn on the stove")
    assert len(EpisodeDataset(ds).episodes) == 3


def test_unusable_dataset_folder_is_a_clear_error_and_the_node_stays_up(robot, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with NodeProcess("bitvla_ros.ros.recorder_node", "bitvla_recorder", params(blocker / "ds"), tmp_path) as proc:
        assert robot.wait_for_node("bitvla_recorder"), proc.log()
        robot.instruct("put the bowl on the stove")
        robot.spin_for(0.5)
        res = trigger(robot, "start_episode")
        assert not res.success and "a_file" in res.message and ("ENOTDIR" in res.message or "directory" in res.message)
        assert not trigger(robot, "stop_episode").success
        assert proc.alive(), proc.log()


@pytest.mark.parametrize("publisher_reliable", [True, False])
def test_reliable_inputs_record_only_from_reliable_publishers(rclpy_context, tmp_path, publisher_reliable):
    """input_reliability=reliable (as `bitvla record` uses it) receives every sample from reliable
    publishers; DDS does not match it with best-effort ones, so nothing is recorded and stop says why."""
    robot = FakeRobot(rclpy_context, CAMERAS, PROPRIO, teleop_topic="teleop/joint_command", reliable=publisher_reliable)
    try:
        with NodeProcess("bitvla_ros.ros.recorder_node", "bitvla_recorder",
                         params(tmp_path / "ds", input_reliability="reliable"), tmp_path) as proc:
            assert robot.wait_for_node("bitvla_recorder"), proc.log()
            if publisher_reliable:
                assert "saved episode 0" in record_episode(robot, "put the bowl on the stove")
            else:
                robot.instruct("put the bowl on the stove")
                robot.spin_for(0.5)
                assert trigger(robot, "start_episode").success
                robot.spin_for(1.0)
                res = trigger(robot, "stop_episode")
                assert not res.success and "no frames" in res.message
                assert robot.incompatible  # DDS refused the match on the publisher's side too
                assert "set input_reliability: best_effort" in proc.log()
            assert proc.alive(), proc.log()
    finally:
        robot.close()


def test_unknown_input_reliability_is_a_clear_error():
    from bitvla_ros.ros.qos import RELIABLE_SENSORS, SENSORS, sensor_qos

    assert sensor_qos("reliable") is RELIABLE_SENSORS and sensor_qos("best_effort") is SENSORS
    with pytest.raises(ValueError, match="best_effort.*reliable"):
        sensor_qos("reliabel")
