"""policy_node (`bitvla_policy`): cameras + joint states + instruction in, action chunks out.

A thin shell over `bitvla_ros.policy.runner.PolicyRunner`: subscriptions only convert and store
the latest sample, an inference thread runs the model, a timer at `control_rate_hz` advances the
queue (and streams actions), services enable and reset, and parameters swap the policy at run time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from builtin_interfaces.msg import Duration

from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.policy.runner import STREAM, TRAJECTORY, PolicyRunner, PolicySettings
from bitvla_ros.ros.conversions import compressed_to_rgb, header_seconds, image_to_rgb
from bitvla_ros.ros.params import Param, declare
from bitvla_ros.ros.spin import run
from bitvla_ros.ros.qos import LATCHED, subscribe_sensor

PARAMS = [
    Param("model_path", "", "model folder (packed or published layout); changing it at run time swaps the policy"),
    Param("backend", "auto", "ternary kernel backend: auto, cuda, cpu, int8 or reference"),
    Param("device", "auto", "where the model runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda "
          "or cuda:N"),
    Param("unnorm_key", "", "dataset statistics key used to un-normalize actions ('' = the only one)"),
    Param("center_crop", "auto", "crop the central 90% of each image before resizing: auto (as the model was "
          "trained), true or false"),
    Param("image_pipeline", "auto", "image preprocessing: auto (the model's config), siglip, or libero (the "
          "published LIBERO eval's JPEG round trip, Lanczos3 resize and TF center crop)"),
    Param("seed", -1, "seed python, numpy and torch at start (the published LIBERO eval uses 7); -1 = leave unseeded",
          read_only=True),
    Param("num_threads", 0, "torch CPU threads for inference (0 = torch's default, one per core); use 1 when "
          "another busy process (a simulator, a driver) shares a small CPU", read_only=True),
    Param("image_topics", ["camera/image_raw"], "camera topics in the model's image order; a topic ending in "
          "'/compressed' is read as sensor_msgs/CompressedImage", read_only=True),
    Param("proprio_names", [""], "joint names read from joint_states into the proprio vector, in model order",
          read_only=True),
    Param("action_names", [""], "names of the action dimensions (joint_names of the JointTrajectory)",
          read_only=True),
    Param("command_type", TRAJECTORY, "joint_trajectory (one JointTrajectory per chunk) or float64_multiarray "
          "(one Float64MultiArray per control tick, for forward_command_controller)", read_only=True),
    Param("control_rate_hz", 20.0, "rate at which actions are executed (and streamed)", read_only=True),
    Param("execute_steps", 8, "actions executed from each chunk before re-planning", read_only=True),
    Param("prefetch_steps", 0, "start the next inference when this many actions are left", read_only=True),
    Param("input_reliability", "best_effort", "camera and joint-state subscriptions: best_effort (any publisher) "
          "or reliable (every sample; needs reliable publishers)", read_only=True),
    Param("max_observation_age_s", 0.5, "refuse observations whose oldest input is older than this"),
    Param("action_lower", [-1e9], "lower bound per action dimension (one value applies to all)"),
    Param("action_upper", [1e9], "upper bound per action dimension (one value applies to all)"),
    Param("max_step_delta", [1e9], "largest change of a command from the previous one, per dimension"),
    Param("hold_command", "none", "on disable or fault publish once: none, last (repeat last) or zero"),
    Param("start_enabled", False, "start commanding without a call to ~/enable", read_only=True),
    Param("dry_run", False, "run the policy and report, but publish no commands"),
    Param("diagnostics_rate_hz", 1.0, "rate of /diagnostics status messages", read_only=True),
]
SWAP_PARAMS = ("model_path", "backend", "unnorm_key", "center_crop", "image_pipeline", "device")
LIMIT_PARAMS = ("action_lower", "action_upper", "max_step_delta")

def load_predictor(model_path: str, backend: str, unnorm_key: str, center_crop: str, image_pipeline: str = "auto",
                   device: str = "auto"):
    from bitvla_ros.model.predict import BitVLAPredictor  # torch loads with the first model, not at import

    crop = {"auto": None, "true": True, "false": False}.get(str(center_crop).lower())
    if crop is None and str(center_crop).lower() != "auto":
        raise ValueError(f"center_crop must be auto, true or false, got {center_crop!r}")
    pipeline = str(image_pipeline).lower()
    if pipeline not in ("auto", "siglip", "libero"):
        raise ValueError(f"image_pipeline must be auto, siglip or libero, got {image_pipeline!r}")
    return BitVLAPredictor.from_pretrained(Path(model_path).expanduser(), backend=backend,
                                           unnorm_key=unnorm_key or None, center_crop=crop,
                                           image_pipeline=None if pipeline == "auto" else pipeline, device=device)


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("bitvla_policy", **kwargs)
        p = self.values = declare(self, PARAMS)
        if p["num_threads"] > 0:
            import torch

            torch.set_num_threads(p["num_threads"])
        if p["seed"] >= 0:
            from bitvla_ros.sim.protocol import seed_everything

            seed_everything(p["seed"])
        cams = [f"camera_{i}" for i in range(len(p["image_topics"]))]
        settings = PolicySettings(
            camera_names=cams, proprio_names=[n for n in p["proprio_names"] if n],
            action_names=[n for n in p["action_names"] if n], control_rate_hz=p["control_rate_hz"],
            execute_steps=p["execute_steps"], prefetch_steps=p["prefetch_steps"],
            max_observation_age_s=p["max_observation_age_s"], command_type=p["command_type"],
            lower=p["action_lower"], upper=p["action_upper"], max_step_delta=p["max_step_delta"],
            hold_command=p["hold_command"], start_enabled=p["start_enabled"])
        self.runner = PolicyRunner(settings, log=self.get_logger().warning)
        self._model_label = ""
        if p["model_path"]:
            try:
                predictor = load_predictor(p["model_path"], p["backend"], p["unnorm_key"], p["center_crop"],
                                           p["image_pipeline"], p["device"])
                self.runner.stage(predictor)
                self._model_label = p["model_path"]
                self.get_logger().info(f"loaded {p['model_path']}: {predictor.summary()}")
            except Exception as e:  # noqa: BLE001 - report and keep running without a policy
                self.get_logger().error(f"could not load model_path {p['model_path']!r}: {e}; "
                                        "no commands until a model loads (set model_path)")
        else:
            self.get_logger().warning("model_path is empty: no commands until it is set")

        inputs = MutuallyExclusiveCallbackGroup()
        for cam, topic in zip(cams, p["image_topics"]):
            kind, convert = (CompressedImage, compressed_to_rgb) if topic.endswith("/compressed") else (Image, image_to_rgb)
            subscribe_sensor(self, kind, topic, self._image_callback(cam, convert), p["input_reliability"],
                             callback_group=inputs)
        subscribe_sensor(self, JointState, "joint_states", self._on_joint_state, p["input_reliability"],
                         callback_group=inputs)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED, callback_group=inputs)

        kind = JointTrajectory if settings.command_type == TRAJECTORY else Float64MultiArray
        self.command_pub = self.create_publisher(kind, "joint_command", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(1.0 / settings.control_rate_hz, self._on_tick, callback_group=MutuallyExclusiveCallbackGroup())
        # Diagnostics on the wall clock: under sim time a paused sim would silence them.
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup(), clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_on_set_parameters_callback(self._on_parameters)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._inference_loop, name="bitvla_inference", daemon=True)
        self._worker.start()

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- inputs: convert, validate, store -------------------------------------------------

    def _image_callback(self, camera: str, convert):
        def callback(msg):
            try:
                self.runner.observations.put_image(camera, convert(msg), header_seconds(msg.header, self.now()))
            except Rejected as r:
                self.runner.report(r, self.now())
        return callback

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.runner.observations.put_joint_state(msg.name, msg.position, header_seconds(msg.header, self.now()))
        except Rejected as r:
            self.runner.report(r, self.now())

    def _on_instruction(self, msg: String) -> None:
        try:
            if self.runner.set_instruction(msg.data):
                self.get_logger().info(f"instruction: {msg.data.strip()[:200]!r}")
        except Rejected as r:
            self.runner.report(r, self.now())

    # --- the two loops ----------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            if not self.runner.scheduler.needs_inference() or self.runner.predictor is None:
                self._stop.wait(0.005)
                continue
            command = self.runner.infer_once(self.now())
            if command is not None:
                self._publish(command)
            elif self.runner.scheduler.needs_inference():
                self._stop.wait(0.01)  # refused or disabled: don't spin

    def _on_tick(self) -> None:
        command = self.runner.tick(self.now())
        if command is not None:
            self._publish(command)

    def _publish(self, command) -> None:
        if self.get_parameter("dry_run").value:
            return
        if self.runner.settings.command_type == STREAM:
            self.command_pub.publish(Float64MultiArray(data=[float(v) for v in command.actions[0]]))
            return
        msg = JointTrajectory(joint_names=self.runner.settings.action_names)
        if np.isfinite(command.stamp):
            msg.header.stamp = rclpy.time.Time(nanoseconds=int(command.stamp * 1e9)).to_msg()
        else:
            msg.header.stamp = self.get_clock().now().to_msg()
        period = 1.0 / self.runner.settings.control_rate_hz
        for k, action in enumerate(command.actions, start=1):  # first point one control period ahead
            t = k * period
            msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in action],
                                                   time_from_start=Duration(sec=int(t), nanosec=int((t % 1) * 1e9))))
        self.command_pub.publish(msg)

    # --- services and parameters -------------------------------------------------------------

    def _on_enable(self, request, response):
        hold = self.runner.set_enabled(request.data)
        if hold is not None:
            self._publish(hold)
        response.success, response.message = True, "enabled" if request.data else "disabled"
        self.get_logger().info(f"policy {response.message}")
        return response

    def _on_reset(self, request, response):
        self.runner.reset()
        response.success = True
        response.message = f"queue flushed, fault cleared; instruction {self.runner.observations.instruction()!r}"
        return response

    def _on_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        if any(n in changes for n in SWAP_PARAMS):
            cfg = {n: changes.get(n, self.get_parameter(n).value) for n in SWAP_PARAMS}
            if not cfg["model_path"]:
                return SetParametersResult(successful=False, reason="model_path is empty")
            start = time.perf_counter()
            try:
                predictor = load_predictor(cfg["model_path"], cfg["backend"], cfg["unnorm_key"], cfg["center_crop"],
                                           cfg["image_pipeline"], cfg["device"])
                self.runner.stage(predictor)
            except Exception as e:  # noqa: BLE001 - any load failure rejects the change
                reason = f"kept the running policy: {type(e).__name__}: {e}"
                self.get_logger().error(f"policy swap to {cfg} failed; {reason}")
                return SetParametersResult(successful=False, reason=reason)
            self._model_label = cfg["model_path"]
            self.get_logger().info(f"policy swap staged in {time.perf_counter() - start:.2f} s: {cfg}; "
                                   "it takes over before the next chunk")
        if "max_observation_age_s" in changes:
            self.runner.observations.max_age_s = float(changes["max_observation_age_s"])
        if any(n in changes for n in LIMIT_PARAMS):
            lim = {n: changes.get(n, self.get_parameter(n).value) for n in LIMIT_PARAMS}
            try:
                self.runner.set_limits(lim["action_lower"], lim["action_upper"], lim["max_step_delta"])
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        s = self.runner.status()
        level = DiagnosticStatus.ERROR if s["fault"] else (DiagnosticStatus.OK if s["enabled"] else DiagnosticStatus.WARN)
        message = s["fault"] or ("running" if s["enabled"] else "disabled (call ~/enable)")
        if self.runner.predictor is None:
            level, message = DiagnosticStatus.ERROR, "no model loaded"
        fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
        chosen = self.runner.predictor.describe() if hasattr(self.runner.predictor, "describe") else {}
        values = {"model": self._model_label, "backend": s["backend"], "dry_run": self.get_parameter("dry_run").value,
                  **{k: chosen.get(k) for k in ("device", "device_reason", "backend_reason", "forward")},
                  "latency_p50_s": s["latency_p50_s"], "latency_p95_s": s["latency_p95_s"],
                  "observation_age_s": s["observation_age_s"], "chunks_published": s["chunks_published"],
                  "queued_actions": s["queued_actions"], "clamped_commands": s["clamped_commands"],
                  **{f"rejected_{k}": v for k, v in s["rejected"].items()}}
        status = DiagnosticStatus(level=level, name="bitvla_policy", message=message, hardware_id=self._model_label,
                                  values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def destroy_node(self):
        self._stop.set()
        self._worker.join(timeout=5)
        return super().destroy_node()


def main(args=None) -> None:
    run(PolicyNode, lambda: MultiThreadedExecutor(num_threads=4), args)


if __name__ == "__main__":
    main()
