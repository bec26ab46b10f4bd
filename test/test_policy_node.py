"""policy_node in its own process over real DDS, fed by fake cameras and joints in the test.

A tiny random BitVLA (packed, made here) runs on the reference kernels.
"""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import tiny
from ros_helpers.fake_robot import FakeRobot
from ros_helpers.harness import NodeProcess, call
from bitvla_ros.model.checkpoint import convert

CAMERAS = ["agentview/image_raw", "wrist/image_raw/compressed"]
PROPRIO = [f"p{i}" for i in range(8)]
ACTIONS = ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]
RATE = 20.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, seed in (("a", 0), ("b", 7)):
        convert(tiny.write_published_checkpoint(root / f"pub_{name}", tiny.model(seed)), root / name)
        out[name] = root / name
    return out


def node_params(model_dir, **overrides):
    return {"model_path": str(model_dir), "backend": "reference", "image_topics": CAMERAS,
            "proprio_names": PROPRIO, "action_names": ACTIONS, "control_rate_hz": RATE,
            "max_observation_age_s": 1.0, "start_enabled": True, "diagnostics_rate_hz": 4.0} | overrides


@pytest.fixture
def robot(rclpy_context):
    r = FakeRobot(rclpy_context, CAMERAS, PROPRIO)
    yield r
    r.close()


def set_param(robot, name, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = robot.node.create_client(SetParameters, "/bitvla_policy/set_parameters")
    value_msg = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    result = call(robot.executor, client, SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)]))
    return result.results[0]


def get_param(robot, name):
    from rcl_interfaces.srv import GetParameters

    client = robot.node.create_client(GetParameters, "/bitvla_policy/get_parameters")
    value = call(robot.executor, client, GetParameters.Request(names=[name])).values[0]
    return value.string_value


def point_times(msg):
    return [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]


def test_chunks_arrive_with_names_points_timing_and_stamp(models, robot, tmp_path):
    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", node_params(models["a"]), tmp_path) as proc:
        robot.instruct("put the bowl on the stove")
        assert robot.spin_until(lambda: len(robot.commands) >= 3, 60), proc.log()
        msg = robot.commands[-1]
        assert list(msg.joint_names) == ACTIONS
        # the default stamp_mode is zero: "start at once"; the points are the live part of the chunk
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)
        times = point_times(msg)
        assert 1 <= len(msg.points) <= 8 and all(len(p.positions) == 7 for p in msg.points)
        assert 0 < times[0] <= 1 / RATE + 1e-6
        assert np.diff(times) == pytest.approx([1 / RATE] * (len(times) - 1), abs=1e-6)
        # stamp_mode takes effect when set: the observation's own stamp, points timed from it
        assert set_param(robot, "stamp_mode", "observation").successful
        n = len(robot.commands)
        assert robot.spin_until(lambda: len(robot.commands) >= n + 3, 30), proc.log()
        msg = robot.commands[-1]
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        assert min(abs(stamp - s) for s in robot.stamps) < 1e-6
        skipped = round(point_times(msg)[0] * RATE) - 1  # actions already past when the chunk came back
        assert point_times(msg) == pytest.approx([(skipped + k + 1) / RATE for k in range(len(msg.points))], abs=1e-6)
        assert len(msg.points) == 8 - skipped
        # every chunk is one the trajectory controller executes
        assert not robot.controller.rejected and len(robot.controller.accepted) == len(robot.commands)
        # /diagnostics runs on its own timer: wait for a status that counts a published chunk
        assert robot.spin_until(lambda: int(robot.last_status()[1].get("chunks_published", 0)) >= 1, 30)
        status, values = robot.last_status()
        assert status is not None and values["backend"] == "reference"
        assert int(values["chunks_published"]) >= 1 and float(values["latency_p50_s"]) > 0
        assert float(values["tick_interval_p50_s"]) == pytest.approx(1 / RATE, rel=0.5)
        assert proc.alive()


def test_starts_disabled_enables_and_refuses_stale_or_bad_input(models, robot, tmp_path):
    from std_srvs.srv import SetBool

    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy",
                     node_params(models["a"], start_enabled=False), tmp_path) as proc:
        robot.instruct("put the bowl on the stove")
        # the model loads in the background; then it runs, fed, but disabled
        loaded = lambda: robot.last_status()[0] is not None and "disabled" in robot.last_status()[0].message  # noqa: E731
        assert robot.spin_until(loaded, 60), proc.log()
        robot.spin_for(2.0)
        assert robot.commands == []
        enable = robot.node.create_client(SetBool, "/bitvla_policy/enable")
        assert call(robot.executor, enable, SetBool.Request(data=True)).success
        assert robot.spin_until(lambda: len(robot.commands) >= 2, 60), proc.log()

        # stale inputs, a bad encoding, NaN joints and empty / huge instructions: no new commands
        robot.age_s, robot.encoding, robot.nan = 5.0, "yuv422", True
        robot.instruct("")
        robot.instruct("x" * 10_000)
        robot.spin_for(1.5)
        before = len(robot.commands)
        robot.spin_for(2.0)
        assert len(robot.commands) == before
        robot.spin_until(lambda: "rejected_non_finite_proprio" in robot.last_status()[1], 5)
        _, values = robot.last_status()
        for cause in ("bad_encoding", "non_finite_proprio", "bad_instruction"):
            assert int(values.get(f"rejected_{cause}", 0)) >= 1, values
        # fresh, valid input again: commands resume
        robot.age_s, robot.encoding, robot.nan = 0.0, "rgb8", False
        assert robot.spin_until(lambda: len(robot.commands) > before, 30), proc.log()
        assert proc.alive()


def test_policy_swap_and_failed_swap_rollback(models, robot, tmp_path):
    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", node_params(models["a"]), tmp_path) as proc:
        robot.instruct("put the bowl on the stove")
        assert robot.spin_until(lambda: len(robot.commands) >= 2, 60), proc.log()
        last_point = lambda: np.array(robot.commands[-1].points[-1].positions)  # noqa: E731 - chunk index 7
        first = last_point()
        result = set_param(robot, "model_path", str(models["b"]))
        assert result.successful, result.reason  # accepted at once; the model loads in the background
        swapped_in = lambda: robot.last_status()[1].get("model") == str(models["b"])  # noqa: E731
        assert robot.spin_until(swapped_in, 30), proc.log()
        n = len(robot.commands)
        assert robot.spin_until(lambda: len(robot.commands) >= n + 2, 30)
        swapped = last_point()
        assert not np.allclose(first, swapped)  # another model, same observation
        bad = set_param(robot, "model_path", str(tmp_path / "missing"))
        assert not bad.successful and "kept the running policy" in bad.reason and "does not exist" in bad.reason
        # a folder that looks right but does not load: accepted, then put back as it was
        broken = tmp_path / "broken"
        shutil.copytree(models["a"], broken)
        (broken / "model.safetensors").write_bytes(b"not a safetensors file")
        assert set_param(robot, "model_path", str(broken)).successful
        assert robot.spin_until(lambda: robot.last_status()[1].get("last_load_error", "") != "", 30), proc.log()
        assert get_param(robot, "model_path") == str(models["b"])
        assert robot.last_status()[1]["model"] == str(models["b"])
        n = len(robot.commands)
        assert robot.spin_until(lambda: len(robot.commands) >= n + 2, 30)
        assert np.allclose(last_point(), swapped)
        assert not robot.controller.rejected


def test_parameters_carry_their_limits_and_refuse_values_outside_them(models, robot, tmp_path):
    from rcl_interfaces.srv import DescribeParameters

    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", node_params(models["a"]), tmp_path) as proc:
        assert robot.wait_for_node("bitvla_policy"), proc.log()
        client = robot.node.create_client(DescribeParameters, "/bitvla_policy/describe_parameters")
        found = call(robot.executor, client, DescribeParameters.Request(
            names=["stamp_mode", "max_observation_age_s", "execute_steps", "image_topics"])).descriptors
        described = {d.name: d for d in found}
        assert "zero" in described["stamp_mode"].additional_constraints
        assert described["max_observation_age_s"].floating_point_range[0].to_value > 0
        assert described["execute_steps"].integer_range[0].from_value == 0
        assert described["image_topics"].read_only
        refused = set_param(robot, "stamp_mode", "later")
        assert not refused.successful and "stamp_mode must be one of" in refused.reason
        assert get_param(robot, "stamp_mode") == "zero"


def test_limits_clamp_every_command(models, robot, tmp_path):
    params = node_params(models["a"], action_lower=[-0.01], action_upper=[0.01], max_step_delta=[0.005])
    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc:
        robot.instruct("turn on the stove")
        assert robot.spin_until(lambda: len(robot.commands) >= 2, 60), proc.log()
        plans = np.concatenate([np.array([p.positions for p in m.points]) for m in robot.commands])
        assert np.abs(plans).max() <= 0.01 + 1e-12
        steps = np.abs(np.diff(np.array([p.positions for p in robot.commands[-1].points]), axis=0))
        assert steps.max() <= 0.005 + 1e-12
    assert proc.proc.returncode in (0, -2), proc.log_tail()  # clean shutdown on SIGINT


def test_shipped_params_file_runs_the_node(models, robot, tmp_path):
    """config/policy.yaml as installed, with only the model and test topics overridden."""
    shipped = Path(__file__).resolve().parent.parent / "config" / "policy.yaml"
    overrides = {"model_path": str(models["a"]), "image_topics": CAMERAS, "proprio_names": PROPRIO,
                 "start_enabled": True, "diagnostics_rate_hz": 4.0}
    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", overrides, tmp_path, params_files=[shipped]) as proc:
        robot.instruct("put the bowl on the stove")
        assert robot.spin_until(lambda: len(robot.commands) >= 1, 60), proc.log()
        assert list(robot.commands[0].joint_names) == ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]
        # /diagnostics runs on its own timer: the first chunk can arrive before the first status
        assert robot.spin_until(lambda: robot.last_status()[1].get("backend"), 30), proc.log()
        _, values = robot.last_status()
        assert values.get("backend") in ("cpu", "reference", "int8", "cuda")


def test_float64_multiarray_stream_at_the_control_rate(models, rclpy_context, tmp_path):
    robot = FakeRobot(rclpy_context, CAMERAS, PROPRIO, stream=True)
    try:
        params = node_params(models["a"], command_type="float64_multiarray", max_step_delta=[0.05])
        with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc:
            robot.instruct("put the bowl on the stove")
            assert robot.spin_until(lambda: len(robot.commands) >= 24, 60), proc.log()
        values = np.array([m.data for m in robot.commands])
        assert values.shape[1] == 7
        assert np.abs(np.diff(values, axis=0)).max() <= 0.05 + 1e-9  # the step limit holds across chunks
        t = np.array(robot.arrivals)
        assert np.median(np.diff(t)) == pytest.approx(1 / RATE, rel=0.5)  # one action per control tick
    finally:
        robot.close()


def test_settings_come_from_the_model_unless_a_parameter_says_otherwise(models, robot, tmp_path):
    from bitvla_ros.model.runtime import RuntimeSettings

    model = tmp_path / "with_runtime"
    shutil.copytree(models["a"], model)
    RuntimeSettings(execute_steps=3, control_rate_hz=RATE, action_names=ACTIONS, proprio_names=PROPRIO).save(model)
    params = node_params(model, stamp_mode="observation")
    for name in ("action_names", "proprio_names", "control_rate_hz"):
        params.pop(name)  # left at "from the model"
    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc:
        robot.instruct("put the bowl on the stove")
        assert robot.spin_until(lambda: len(robot.commands) >= 2, 60), proc.log()
        assert list(robot.commands[-1].joint_names) == ACTIONS
        last_index = lambda msg: round(point_times(msg)[-1] * RATE) - 1  # noqa: E731 - chunk index of the last point
        assert all(last_index(m) == 2 for m in robot.commands)  # execute_steps 3, from runtime.json
        assert robot.spin_until(lambda: robot.last_status()[1].get("execute_steps") == "3", 10)
        result = set_param_int(robot, "execute_steps", 5)  # an explicit parameter wins, at run time
        assert result.successful, result.reason
        assert robot.spin_until(lambda: robot.last_status()[1].get("execute_steps") == "5", 10)
        n = len(robot.commands)
        assert robot.spin_until(lambda: len(robot.commands) >= n + 2, 30)
        assert last_index(robot.commands[-1]) == 4
        assert not robot.controller.rejected


def set_param_int(robot, name, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = robot.node.create_client(SetParameters, "/bitvla_policy/set_parameters")
    value_msg = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    result = call(robot.executor, client, SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)]))
    return result.results[0]
