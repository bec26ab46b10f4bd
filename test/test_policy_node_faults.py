"""policy_node failing closed, answering while a model loads, and its lifecycle variant.

The fault and slow-load tests run the node in the test process (its own executor on a thread,
as `ros2 run` would spin it) with a fake predictor in place of a model, so they can make it raise,
return NaN or load slowly; the lifecycle test runs the managed node in its own process.
"""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import tiny
from bitvla_ros.model.checkpoint import convert
from ros_helpers.fake_robot import FakeRobot
from ros_helpers.harness import NodeProcess, call

CAMERAS = ["agentview/image_raw", "wrist/image_raw"]
PROPRIO = [f"p{i}" for i in range(8)]
ACTIONS = ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]


class FakePredictor:
    def __init__(self):
        self.model = SimpleNamespace(config=SimpleNamespace(action_dim=7, num_images=2, use_proprio=True, proprio_dim=8,
                                                            action_chunk=8, vision=SimpleNamespace(image_size=16)),
                                     backend_name="fake")
        self.mode = "ok"

    def warm_up(self):
        return self.predict([np.zeros((16, 16, 3), np.uint8)] * 2, "warm up", np.zeros(8))

    def predict(self, images, instruction, proprio):
        if self.mode == "raise":
            raise RuntimeError("the accelerator fell off")
        actions = np.full((8, 7), 0.5)
        if self.mode == "nan":
            actions[2, 3] = np.nan
        return SimpleNamespace(actions=actions, inference_s=0.001)


@pytest.fixture
def in_process_node(rclpy_context):
    """Start a PolicyNode in this process; yields a factory taking parameter overrides."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from bitvla_ros.ros.policy_node import PolicyNode

    made = []

    def start(**params):
        base = {"image_topics": CAMERAS, "proprio_names": PROPRIO, "action_names": ACTIONS, "start_enabled": True,
                "control_rate_hz": 20.0, "max_observation_age_s": 1.0, "diagnostics_rate_hz": 10.0} | params
        node = PolicyNode(context=rclpy_context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in base.items()])
        executor = SingleThreadedExecutor(context=rclpy_context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        made.append((node, executor, thread))
        return node

    yield start
    for node, executor, thread in made:
        executor.shutdown()
        thread.join(5)
        node.destroy_node()


@pytest.fixture
def robot_for(rclpy_context):
    robots = []

    def make(stream: bool):
        robots.append(FakeRobot(rclpy_context, CAMERAS, PROPRIO, stream=stream))
        return robots[-1]

    yield make
    for r in robots:
        r.close()


@pytest.mark.parametrize("command_type", ["joint_trajectory", "float64_multiarray"])
@pytest.mark.parametrize("failure", ["raise", "nan"])
def test_a_failing_policy_faults_holds_reports_and_recovers_on_reset(in_process_node, robot_for, command_type,
                                                                     failure):
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_srvs.srv import Trigger

    stream = command_type == "float64_multiarray"
    robot = robot_for(stream)
    node = in_process_node(command_type=command_type, hold_command="zero", max_step_delta=[0.2])
    predictor = FakePredictor()
    node.runner.stage(predictor)
    robot.instruct("open the drawer")
    assert robot.spin_until(lambda: len(robot.commands) >= 3, 30)

    predictor.mode = failure
    faulted = lambda: robot.last_status()[0] is not None and robot.last_status()[0].level == DiagnosticStatus.ERROR  # noqa: E731
    assert robot.spin_until(faulted, 30)
    status, _ = robot.last_status()
    assert ("fell off" in status.message) if failure == "raise" else ("non-finite" in status.message)
    robot.spin_for(0.5)
    hold = robot.commands[-1]  # the last thing sent is the hold: zero, limited to 0.2 from 0.5
    held = hold.data if stream else hold.points[-1].positions
    assert np.allclose(held, 0.3)
    if not stream:
        assert len(hold.points) == 1
    n = len(robot.commands)
    robot.spin_for(1.0)
    assert len(robot.commands) == n  # nothing while faulted
    assert not robot.controller.rejected

    predictor.mode = "ok"
    reset = robot.node.create_client(Trigger, "/bitvla_policy/reset")
    assert call(robot.executor, reset, Trigger.Request()).success
    assert robot.spin_until(lambda: len(robot.commands) >= n + 3, 30)  # serving again
    assert robot.spin_until(lambda: robot.last_status()[0].level == DiagnosticStatus.OK, 10)


def test_enable_reset_and_parameters_answer_while_a_slow_model_loads(in_process_node, robot_for, tmp_path,
                                                                     monkeypatch, report):
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_srvs.srv import SetBool, Trigger

    import bitvla_ros.ros.policy_node as policy_node

    def slow_load(*args, **kwargs):
        time.sleep(4.0)
        return FakePredictor()

    monkeypatch.setattr(policy_node, "load_predictor", slow_load)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    robot = robot_for(False)
    node = in_process_node()
    robot.instruct("open the drawer")
    set_params = robot.node.create_client(SetParameters, "/bitvla_policy/set_parameters")

    def set_string(name, value):
        v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        return call(robot.executor, set_params, SetParameters.Request(parameters=[ParameterMsg(name=name, value=v)]))

    start = time.perf_counter()
    assert set_string("model_path", str(folder)).results[0].successful
    accepted_s = time.perf_counter() - start
    assert node.policy.loading  # still loading while the services below are served
    timings = {}
    enable = robot.node.create_client(SetBool, "/bitvla_policy/enable")
    reset = robot.node.create_client(Trigger, "/bitvla_policy/reset")
    for name, client, request in (("enable false", enable, SetBool.Request(data=False)),
                                  ("reset", reset, Trigger.Request()),
                                  ("enable true", enable, SetBool.Request(data=True))):
        call(robot.executor, client, request)  # waits for the service to be discovered
        t = time.perf_counter()
        assert call(robot.executor, client, request).success
        timings[name] = time.perf_counter() - t
    assert node.policy.loading, "the load ended before the services were timed; make it slower"
    report("policy_node services during a 4 s model load: set_parameters accepted in "
           f"{accepted_s * 1e3:.0f} ms; " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in timings.items()))
    assert max(timings.values()) < 1.0 and accepted_s < 1.0  # wide: the load takes 4 s
    # a second model change while one loads is refused with the reason, the first one still lands
    refused = set_string("model_path", str(tmp_path)).results[0]
    assert not refused.successful and "still loading" in refused.reason
    assert robot.spin_until(lambda: len(robot.commands) >= 1, 30)


TRANSITIONS = {"configure": 1, "cleanup": 2, "activate": 3, "deactivate": 4}


def test_lifecycle_node_loads_on_configure_commands_only_when_active_and_holds_on_deactivate(rclpy_context, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    model = tmp_path / "model"
    convert(tiny.write_published_checkpoint(tmp_path / "pub", tiny.model(0)), model)
    params = {"model_path": str(model), "backend": "reference", "image_topics": CAMERAS, "proprio_names": PROPRIO,
              "action_names": ACTIONS, "control_rate_hz": 20.0, "max_observation_age_s": 1.0,
              "diagnostics_rate_hz": 4.0, "hold_command": "last"}
    robot = FakeRobot(rclpy_context, CAMERAS, PROPRIO)
    try:
        with NodeProcess("bitvla_ros.ros.policy_lifecycle_node", "bitvla_policy", params, tmp_path) as proc:
            change = robot.node.create_client(ChangeState, "/bitvla_policy/change_state")
            get = robot.node.create_client(GetState, "/bitvla_policy/get_state")

            def transition(name):
                return call(robot.executor, change, ChangeState.Request(transition=Transition(id=TRANSITIONS[name])),
                            timeout=60).success

            robot.instruct("put the bowl on the stove")
            assert call(robot.executor, get, GetState.Request(), timeout=60).current_state.label == "unconfigured"
            assert transition("configure"), proc.log()  # returns once the model is loaded and warm
            robot.spin_for(1.5)
            assert robot.commands == []  # inactive: no commands
            assert transition("activate")
            assert robot.spin_until(lambda: len(robot.commands) >= 2, 30), proc.log()
            assert transition("deactivate")
            robot.spin_for(0.5)
            n = len(robot.commands)
            hold = robot.commands[-1]
            assert len(hold.points) == 1  # the hold: the command in effect, once
            robot.spin_for(1.5)
            assert len(robot.commands) == n
            assert transition("cleanup")
            assert call(robot.executor, get, GetState.Request()).current_state.label == "unconfigured"
            assert not robot.controller.rejected and proc.alive()
    finally:
        robot.close()
