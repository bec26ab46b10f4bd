"""`bitvla eval --protocol libero`: the protocol's defaults, the ROS path and the in-process path
giving the same actions on the same observation, and an end-to-end run on a synthetic checkpoint
in the published layout (LIBERO required for that one)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tiny
from ros_helpers.fake_robot import FakeRobot
from ros_helpers.harness import NodeProcess
from bitvla_ros.cli import build_parser
from bitvla_ros.model.checkpoint import convert
from bitvla_ros.model.predict import BitVLAPredictor
from bitvla_ros.ros.evaluate import EvalConfig
from bitvla_ros.sim import protocol as P
from bitvla_ros.sim.libero_env import Observation
from bitvla_ros.sim.rollout_inprocess import run_episode_in_process
from bitvla_ros.sim.runner import SimRunner

REPO = Path(__file__).resolve().parent.parent
CAMERAS = ["agentview/image_raw", "wrist/image_raw"]
PROPRIO_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "finger_left", "finger_right"]
ACTIONS = ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]
INSTRUCTION = "put the bowl on the stove"

# robosuite's logger calls the deprecated Logger.warn while LIBERO builds scenes (warnings are errors)
libero_warnings = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


def fixed_observation():
    """Two 256 px camera images with structure (so that JPEG, resize and crop all matter) and a
    raw 8-D proprio state."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:256, 0:256]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.int64)
    images = [np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8),
              np.clip(255 - base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)]
    proprio = np.array([0.05, -0.1, 0.9, 3.1, 0.05, -0.02, 0.039, -0.039])
    return images, proprio


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol_models")
    convert(tiny.write_published_checkpoint(root / "published", tiny.model(5)), root / "packed")
    return root / "packed"


# --- defaults -----------------------------------------------------------------------------------

def test_libero_protocol_defaults_and_overrides():
    cfg = EvalConfig(model="m", output="o", suite="libero_spatial", protocol="libero")
    assert cfg.tasks == list(range(10)) and cfg.episodes == 50 and cfg.init_start == 0
    assert (cfg.seeds, cfg.policy_seed, cfg.image_size, cfg.image_pipeline) == ([0], 7, 256, "libero")
    assert cfg.unnorm_key == "libero_spatial" and cfg.execute_steps == 8 and cfg.max_steps == 0
    cfg = EvalConfig(model="m", output="o", suite="libero_10", protocol="libero", tasks=[3], episodes=2,
                     unnorm_key="libero_10_no_noops")
    assert (cfg.tasks, cfg.episodes, cfg.unnorm_key) == ([3], 2, "libero_10_no_noops")
    ros = EvalConfig(model="m", output="o")  # unchanged project defaults
    assert (ros.tasks, ros.episodes, ros.init_start, ros.seeds, ros.image_size) == ([1], 10, 40, [1], 128)
    assert (ros.image_pipeline, ros.policy_seed, ros.unnorm_key) == ("auto", -1, "")
    with pytest.raises(ValueError, match="protocol"):
        EvalConfig(model="m", output="o", protocol="tf")
    with pytest.raises(ValueError, match="LIBERO suite"):
        EvalConfig(model="m", output="o", suite="bridge", protocol="libero")


def test_cli_leaves_unset_sim_arguments_to_the_protocol():
    args = build_parser().parse_args(["eval", "--model", "m", "--output", "o", "--protocol", "libero",
                                      "--suite", "libero_object", "--in-process"])
    assert args.protocol == "libero" and args.in_process
    assert (args.tasks, args.episodes, args.init_start, args.seeds, args.image_size) == (None,) * 5
    args = build_parser().parse_args(["eval", "--model", "m", "--output", "o", "--episodes", "3"])
    assert args.protocol == "ros" and not args.in_process and args.episodes == 3
    assert args.execute_steps is None  # the model's runtime.json, else whole chunks as the published eval
    assert build_parser().parse_args(["eval", "--model", "m", "--output", "o", "--execute-steps", "4"]).execute_steps == 4
    from bitvla_ros.cli import execute_steps_for
    from bitvla_ros.paths import default_model

    assert execute_steps_for(default_model()) == 4 and execute_steps_for(default_model(), 8) == 8
    assert execute_steps_for("no/such/model") == 8
    record = build_parser().parse_args(["record", "--output", "o"])  # record keeps its own defaults
    assert (record.episodes, record.init_start, record.image_size, record.seeds) == (None, None, 128, [0])


# --- the two paths agree -----------------------------------------------------------------------

class FixedRobot(FakeRobot):
    """Publishes one fixed observation (two raw rgb8 images, the 8-D state) at 10 Hz."""

    def __init__(self, context, images, proprio):
        self.fixed_images, self.fixed_proprio = images, proprio
        super().__init__(context, CAMERAS, PROPRIO_NAMES)

    def publish(self):
        from bitvla_ros.ros.conversions import rgb_to_image

        stamp = self.node.get_clock().now().to_msg()
        for image, pub in zip(self.fixed_images, self.camera_pubs):
            msg = rgb_to_image(self.Image(), image)
            msg.header.stamp = stamp
            pub.publish(msg)
        js = self.JointState(name=PROPRIO_NAMES, position=[float(v) for v in self.fixed_proprio])
        js.header.stamp = stamp
        self.joint_pub.publish(js)


class FixedEnv:
    """A stand-in LiberoEnv that always shows the fixed observation and records the env actions."""

    instruction, max_steps = INSTRUCTION, 8

    def __init__(self, images, proprio):
        self.obs = Observation(images[0], images[1], proprio, proprio[:3], np.array([0, 0, 0, 1.0]), proprio[6:])
        self.actions = []

    def reset(self, init_state):
        return self.obs

    def step(self, action):
        self.actions.append(np.asarray(action))
        return self.obs, False

    def close(self):
        pass


def test_ros_and_in_process_paths_give_the_same_actions(packed, rclpy_context, tmp_path):
    images, proprio = fixed_observation()
    params = {"model_path": str(packed), "backend": "reference", "image_topics": CAMERAS,
              "proprio_names": PROPRIO_NAMES, "action_names": ACTIONS, "control_rate_hz": 20.0,
              "max_observation_age_s": 1.0, "start_enabled": True, "diagnostics_rate_hz": 4.0,
              "image_pipeline": "libero", "seed": 7, "execute_steps": 8, "stamp_mode": "observation"}
    robot = FixedRobot(rclpy_context, images, proprio)
    try:
        with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc:
            robot.instruct(INSTRUCTION)
            assert robot.spin_until(lambda: len(robot.commands) >= 1, 90), proc.log()
        first = robot.commands[0]
        ros_chunk = np.array([p.positions for p in first.points])
        # actions already past when the chunk came back were dropped: the first point says how many
        first_index = round((first.points[0].time_from_start.nanosec * 1e-9 + first.points[0].time_from_start.sec)
                            * 20.0) - 1
    finally:
        robot.close()

    # directly: the predictor with the same pipeline
    predictor = BitVLAPredictor.from_pretrained(packed, backend="reference", image_pipeline="libero")
    direct = predictor.predict(images, INSTRUCTION, proprio).actions[:8]
    assert ros_chunk.shape == (8 - first_index, 7)
    np.testing.assert_allclose(ros_chunk, direct[first_index:], rtol=0, atol=1e-6)

    # the in-process eval loop (the node's PolicyRunner on sim time): what reaches the env is the
    # chunk, post-processed for LIBERO
    env = FixedEnv(images, proprio)
    record = run_episode_in_process(SimRunner(lambda task: env), predictor, 0, 0, execute_steps=8)
    assert record["steps"] == 8 and record["reason"] == "max_steps"
    np.testing.assert_allclose(np.array(env.actions), P.libero_postprocess_action(direct), rtol=0, atol=1e-6)
    assert set(np.array(env.actions)[:, 6]) <= {-1.0, 0.0, 1.0}


def test_in_process_loop_queries_every_execute_steps_and_counts_errors_as_failures(packed):
    images, proprio = fixed_observation()
    calls = []

    class Counting:
        model = SimpleNamespace(config=SimpleNamespace(action_dim=7, num_images=2, use_proprio=True, proprio_dim=8))

        def predict(self, ims, instruction, state):
            calls.append((ims[0].shape, instruction))
            return SimpleNamespace(actions=np.zeros((8, 7)), inference_s=0.01)

    env = FixedEnv(images, proprio)
    env.max_steps = 20
    latencies = []
    record = run_episode_in_process(SimRunner(lambda task: env), Counting(), 0, 3, execute_steps=8,
                                    latencies=latencies)
    assert record["steps"] == 20 and len(calls) == 3 and latencies == [0.01] * 3  # 8 + 8 + 4
    assert calls[0] == ((256, 256, 3), INSTRUCTION) and record["init_state"] == 3
    assert env.actions[0].tolist() == [0, 0, 0, 0, 0, 0, 1.0]  # gripper 0 → close (+1)

    class Failing(Counting):
        def predict(self, *a):
            raise RuntimeError("boom")

    record = run_episode_in_process(SimRunner(lambda task: FixedEnv(images, proprio)), Failing(), 0, 0)
    assert not record["success"] and record["reason"].startswith("error: ") and "RuntimeError: boom" in record["reason"]


# --- end to end --------------------------------------------------------------------------------

@libero_warnings
def test_eval_protocol_libero_in_process_on_a_published_checkpoint(tmp_path, monkeypatch, capsys):
    pytest.importorskip("libero")
    from bitvla_ros.cli import main

    folder = tiny.write_published_checkpoint(tmp_path / "published", tiny.model(2))
    seen = []
    original = BitVLAPredictor.predict

    def spy(self, images, instruction, proprio=None):
        seen.append(([im.shape for im in images], self.processor.image_pipeline, self.stats.key))
        return original(self, images, instruction, proprio)

    monkeypatch.setattr(BitVLAPredictor, "predict", spy)
    out = tmp_path / "out"
    rc = main(["eval", "--protocol", "libero", "--in-process", "--model", str(folder), "--output", str(out),
               "--suite", "libero_spatial", "--tasks", "0", "--episodes", "1", "--max-steps", "5",
               "--no-video", "--backend", "reference"])
    assert rc == 0, capsys.readouterr()
    result = json.loads((out / "results.json").read_text())
    cfg = result["config"]
    assert (cfg["protocol"], cfg["image_size"], cfg["init_start"], cfg["seeds"], cfg["policy_seed"]) == (
        "libero", 256, 0, [0], 7)
    assert cfg["image_pipeline"] == "libero" and cfg["unnorm_key"] == "libero_spatial"
    [episode] = result["episodes"]
    assert (episode["task_id"], episode["init_state"], episode["steps"], episode["reason"]) == (0, 0, 5, "max_steps")
    assert episode["instruction"].startswith("pick up the black bowl")
    assert result["summary"]["all tasks"]["trials"] == 1
    assert result["jpeg_decoder"] in P.JPEG_DECODERS
    # one query for 5 steps (open loop); 256 px renders in; the suite's key resolved with _no_noops
    assert seen == [([(256, 256, 3), (256, 256, 3)], "libero", "libero_spatial_no_noops")]
    assert (out / "success.png").is_file()


@pytest.mark.slow
@libero_warnings
def test_eval_protocol_libero_over_ros_on_a_published_checkpoint(tmp_path):
    """The same run through sim_node + policy_node (child processes) with `bitvla eval`."""
    pytest.importorskip("libero")
    folder = tiny.write_published_checkpoint(tmp_path / "published", tiny.model(2))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bitvla_ros.cli", "eval", "--protocol", "libero", "--model", str(folder),
           "--output", str(out), "--suite", "libero_spatial", "--tasks", "0", "--episodes", "1",
           "--max-steps", "5", "--no-video", "--backend", "reference",
           "--ros-domain-id", os.environ["ROS_DOMAIN_ID"]]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    [episode] = result["episodes"]
    assert (episode["steps"], episode["reason"]) == (5, "max_steps")
    assert result["config"]["image_pipeline"] == "libero" and result["config"]["image_size"] == 256
    params = (out / "logs" / "bitvla_policy.params.yaml").read_text()
    assert "image_pipeline: libero" in params and "seed: 7" in params
