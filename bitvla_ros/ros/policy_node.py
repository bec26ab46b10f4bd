"""policy_node (`bitvla_policy`): cameras + joint states + instruction in, action chunks out.

A thin shell over `bitvla_ros.policy.runner.PolicyRunner`. Threads, so that nothing waits on
anything slow (docs/node.md): one single-threaded executor serves the subscriptions (they only
convert and store), the control timer, the services and parameter changes; the inference thread
runs the model when a chunk is due, woken by fresh input; a loader thread loads and warms up
models. Parameters are checked in the validate callback and applied after it; a model change loads
in the background and takes over between chunks, and a model that then fails to load puts the
parameters back as they were. `policy_lifecycle_node.py` is the managed variant of the same node.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from bitvla_ros.model.runtime import RuntimeSettings
from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.policy.runner import HOLD_MODES, STREAM, TRAJECTORY, PolicyRunner, PolicySettings
from bitvla_ros.policy.safety import SafetyLimits
from bitvla_ros.policy.scheduler import JOINS, check_schedule
from bitvla_ros.policy.timing import STAMP_MODES
from bitvla_ros.ros.conversions import camera_input, header_seconds, node_seconds
from bitvla_ros.ros.diagnostics import ERROR, OK, WARN, publish_status
from bitvla_ros.ros.params import Param, check, declare
from bitvla_ros.ros.qos import INPUT_RELIABILITY, LATCHED, subscribe_sensor
from bitvla_ros.ros.spin import EXECUTORS, make_executor, run

FROM_MODEL = "from the model's runtime.json"
PARAMS = [
    Param("model_path", "", "model folder (packed or published layout); changing it at run time swaps the policy"),
    Param("backend", "auto", "ternary kernel backend", choices=("auto", "cuda", "cpu", "int8", "reference")),
    Param("device", "auto", "where the model runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda "
          "or cuda:N"),
    Param("unnorm_key", "", "dataset statistics key used to un-normalize actions ('' = the only one)"),
    Param("center_crop", "auto", "crop the central 90% of each image before resizing: auto (as the model was "
          "trained), true or false", choices=("auto", "true", "false")),
    Param("image_pipeline", "auto", "image preprocessing: auto (the model's config), siglip, or libero (the "
          "published LIBERO eval's JPEG round trip, Lanczos3 resize and TF center crop)",
          choices=("auto", "siglip", "libero")),
    Param("seed", -1, "seed python, numpy and torch at start (the published LIBERO eval uses 7); -1 = leave unseeded",
          read_only=True, limits=(-1, 2**31 - 1)),
    Param("num_threads", 0, "torch CPU threads for inference (0 = torch's default, one per core); use 1 when "
          "another busy process (a simulator, a driver) shares a small CPU", read_only=True, limits=(0, 1024)),
    Param("executor", "single_threaded", "rclpy executor for callbacks (inference and model loads have threads "
          "of their own)", read_only=True, choices=tuple(EXECUTORS)),
    Param("image_topics", ["camera/image_raw"], "camera topics in the model's image order; a topic ending in "
          "'/compressed' is read as sensor_msgs/CompressedImage", read_only=True),
    Param("proprio_names", [""], f"joint names read from joint_states into the proprio vector, in model order "
          f"([''] = {FROM_MODEL})", read_only=True),
    Param("action_names", [""], f"names of the action dimensions, the JointTrajectory's joint_names "
          f"([''] = {FROM_MODEL})", read_only=True),
    Param("command_type", TRAJECTORY, "joint_trajectory (one JointTrajectory per chunk, for "
          "joint_trajectory_controller) or float64_multiarray (one Float64MultiArray per control tick, for "
          "forward_command_controller)", read_only=True, choices=(TRAJECTORY, STREAM)),
    Param("control_rate_hz", 0.0, f"rate at which actions are executed and streamed (0 = {FROM_MODEL}, "
          f"20 without one)", read_only=True, limits=(0.0, 1000.0)),
    Param("execute_steps", 0, f"actions executed from each chunk before re-planning (0 = {FROM_MODEL}, the "
          "whole chunk without one)", limits=(0, 1024)),
    Param("prefetch_steps", 0, "start the next inference while this many actions are still queued, so the arm "
          "need not wait for the model", limits=(0, 1024)),
    Param("chunk_join", "replace", "how a chunk joins actions still queued: replace (from its first live action "
          "on) or blend (a weighted blend over blend_steps actions; blend_frozen dimensions are replaced)",
          choices=JOINS),
    Param("blend_steps", 3, "actions over which chunk_join: blend fades from the old plan to the new",
          limits=(1, 1024)),
    Param("blend_frozen", ["gripper"], "action names never blended (a half-open gripper is no command)",
          read_only=True),
    Param("stamp_mode", "zero", "JointTrajectory header.stamp: zero (start at the controller's next update; needs "
          "no shared clock), now (the present), or observation (the observation's stamp; points timed from it)",
          choices=STAMP_MODES),
    Param("latency_compensation", True, "drop the actions of a chunk whose control slot passed while the model "
          "ran; false times each chunk from its arrival instead (stop and go: for a model slower than its chunk)"),
    Param("input_reliability", "best_effort", "camera and joint-state subscriptions: best_effort (any publisher) "
          "or reliable (every sample; needs reliable publishers)", read_only=True, choices=tuple(INPUT_RELIABILITY)),
    Param("max_observation_age_s", 0.5, "refuse observations whose oldest input is older than this",
          limits=(0.0, 3600.0)),
    Param("action_lower", [-1e9], "lower bound per action dimension (one value applies to all)"),
    Param("action_upper", [1e9], "upper bound per action dimension (one value applies to all)"),
    Param("max_step_delta", [1e9], "largest change of a command from the one before it, per dimension"),
    Param("hold_command", "none", "on disable or fault publish once: none, last (repeat the command in effect) or "
          "zero (both through the limits above)", choices=HOLD_MODES),
    Param("start_enabled", False, "start commanding without a call to ~/enable", read_only=True),
    Param("dry_run", False, "run the policy and report, but publish no commands"),
    Param("diagnostics_rate_hz", 1.0, "rate of /diagnostics status messages", read_only=True, limits=(0.01, 100.0)),
]
SWAP_PARAMS = ("model_path", "backend", "unnorm_key", "center_crop", "image_pipeline", "device")
LIMIT_PARAMS = ("action_lower", "action_upper", "max_step_delta")
SCHEDULE_PARAMS = ("execute_steps", "prefetch_steps", "chunk_join", "blend_steps")


def load_predictor(model_path: str, backend: str, unnorm_key: str, center_crop: str, image_pipeline: str = "auto",
                   device: str = "auto"):
    from bitvla_ros.model.predict import BitVLAPredictor  # torch loads with the first model, not at import

    crop = {"auto": None, "true": True, "false": False}[str(center_crop).lower()]
    pipeline = str(image_pipeline).lower()
    return BitVLAPredictor.from_pretrained(Path(model_path).expanduser(), backend=backend,
                                           unnorm_key=unnorm_key or None, center_crop=crop,
                                           image_pipeline=None if pipeline == "auto" else pipeline, device=device)


def check_model_folder(path: str) -> RuntimeSettings:
    """Cheap checks of a model folder before anything loads; its runtime settings."""
    folder = Path(path).expanduser()
    if not path:
        raise ValueError("model_path is empty; set it to a model folder")
    if not folder.is_dir():
        raise ValueError(f"model folder {str(folder)!r} does not exist")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: expected a packed model folder (bitvla convert / bitvla "
                         "train) or a published BitVLA checkpoint")
    return RuntimeSettings.load(folder)


def resolve_settings(p: dict, runtime: RuntimeSettings) -> PolicySettings:
    """Node parameters over the model's runtime settings: an explicit parameter wins."""
    named = lambda values: [n for n in values if n]  # noqa: E731 - [''] is ROS's empty string array
    return PolicySettings(
        camera_names=[f"camera_{i}" for i in range(len(p["image_topics"]))],
        proprio_names=named(p["proprio_names"]) or list(runtime.proprio_names),
        action_names=named(p["action_names"]) or list(runtime.action_names),
        control_rate_hz=p["control_rate_hz"] or runtime.rate_hz,
        execute_steps=p["execute_steps"] or runtime.execute_steps or PolicySettings.execute_steps,
        prefetch_steps=p["prefetch_steps"], chunk_join=p["chunk_join"], blend_steps=p["blend_steps"],
        blend_frozen=named(p["blend_frozen"]), max_observation_age_s=p["max_observation_age_s"],
        command_type=p["command_type"], stamp_mode=p["stamp_mode"], lower=p["action_lower"],
        upper=p["action_upper"], max_step_delta=p["max_step_delta"], hold_command=p["hold_command"],
        start_enabled=p["start_enabled"], latency_compensation=p["latency_compensation"])


class PolicyInterface:
    """Everything policy_node does, attached to an rclpy node (plain or lifecycle)."""

    def __init__(self, node: Node, values: dict):
        self.node, self.values = node, values
        self.log = node.get_logger()
        runtime = RuntimeSettings()
        if values["model_path"]:
            try:
                runtime = check_model_folder(values["model_path"])
            except ValueError as e:
                self.log.error(f"model_path: {e}; no commands until a model loads (set model_path)")
        self.runtime, self.model_chunk = runtime, None  # the chunk length is known once a model loads
        settings = resolve_settings(values, runtime)
        self.runner = PolicyRunner(settings, log=self.log.warning, clock=self.now)
        self.model_label, self.loading, self.last_load_error = "", "", ""
        self._loads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitvla_load")
        self._reverting = False
        self._applied = {n: values[n] for n in SWAP_PARAMS}  # what a failed load puts back

        reliability = values["input_reliability"]
        self.subscriptions = []
        for cam, topic in zip(settings.camera_names, values["image_topics"]):
            kind, convert = camera_input(topic)
            self.subscriptions.append(subscribe_sensor(node, kind, topic, self._image_callback(cam, convert),
                                                       reliability))
        self.subscriptions.append(subscribe_sensor(node, JointState, "joint_states", self._on_joint_state, reliability))
        self.subscriptions.append(node.create_subscription(String, "instruction", self._on_instruction, LATCHED))

        kind = JointTrajectory if settings.command_type == TRAJECTORY else Float64MultiArray
        self.command_pub = node.create_publisher(kind, "joint_command", 10)
        self.diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timers = [
            node.create_timer(settings.period, self._on_tick),
            # Diagnostics on the wall clock: under sim time a paused sim would silence them.
            node.create_timer(1.0 / values["diagnostics_rate_hz"], self.publish_diagnostics,
                              clock=Clock(clock_type=ClockType.STEADY_TIME)),
        ]
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)
        self.services = [node.create_service(Trigger, "~/reset", self.on_reset)]

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._inference_loop, name="bitvla_inference", daemon=True)
        self._worker.start()

    def now(self) -> float:
        return node_seconds(self.node)

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
                self.log.info(f"instruction: {msg.data.strip()[:200]!r}")
        except Rejected as r:
            self.runner.report(r, self.now())

    # --- the two loops ----------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            if not self.runner.inference_due(self.now()):
                self.runner.observations.wait_for_input(0.005)
                continue
            command = self.runner.infer_once(self.now())
            if command is not None:
                self.publish(command)
            elif self.runner.inference_due(self.now()):
                self.runner.observations.wait_for_input(0.005)  # waiting for fresh or valid input

    def _on_tick(self) -> None:
        command = self.runner.tick(self.now())
        if command is not None:
            self.publish(command)

    def publish(self, command) -> None:
        if self.node.get_parameter("dry_run").value:
            return
        if self.runner.settings.command_type == STREAM:
            self.command_pub.publish(Float64MultiArray(data=[float(v) for v in command.actions[0]]))
            return
        timing = self.runner.trajectory(command, self.now())
        msg = JointTrajectory(joint_names=self.runner.settings.action_names)
        msg.header.stamp = rclpy.time.Time(nanoseconds=int(round(timing.stamp * 1e9))).to_msg()
        for action, t in zip(command.actions, timing.time_from_start):
            ns = int(round(t * 1e9))
            msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in action],
                                                   time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)))
        self.command_pub.publish(msg)

    # --- models -------------------------------------------------------------------------------

    def load(self, cfg: dict) -> None:
        """Load, check and warm up a policy (blocking); it takes over before the next chunk."""
        start = time.perf_counter()
        runtime = check_model_folder(cfg["model_path"])
        self._check_runtime(runtime)
        predictor = load_predictor(cfg["model_path"], cfg["backend"], cfg["unnorm_key"], cfg["center_crop"],
                                   cfg["image_pipeline"], cfg["device"])
        self.runner.check(predictor)
        warm = predictor.warm_up().inference_s
        chunk = predictor.model.config.action_chunk
        self.runner.set_schedule(execute_steps=self._execute_steps(self.values["execute_steps"], runtime, chunk))
        self.runtime, self.model_chunk = runtime, chunk
        self.runner.stage(predictor)
        self.model_label = cfg["model_path"]
        summary = predictor.summary() if hasattr(predictor, "summary") else ""
        self.log.info(f"loaded {cfg['model_path']} in {time.perf_counter() - start:.2f} s (warm-up {warm:.2f} s): "
                      f"{summary}; it takes over before the next chunk")

    def load_in_background(self, cfg: dict, previous: dict | None) -> None:
        """Load on the loader thread; on failure keep the running policy and put back `previous`."""
        self.loading = cfg["model_path"]

        def work():
            try:
                self.load(cfg)
                self.last_load_error = ""
            except Exception as e:  # noqa: BLE001 - any load failure keeps the running policy
                self.last_load_error = f"{type(e).__name__}: {e}"
                self.log.error(f"could not load {cfg['model_path']!r}: {self.last_load_error}; kept the running "
                               f"policy{' and put the parameters back' if previous else ''}")
                if previous:
                    self._reverting = True
                    try:
                        self.node.set_parameters([Parameter(n, value=v) for n, v in previous.items()])
                    finally:
                        self._reverting = False
            finally:
                self.loading = ""
        return self._loads.submit(work)

    def _check_runtime(self, runtime: RuntimeSettings) -> None:
        """A model whose names or rate differ from those the node runs with cannot take over."""
        s = self.runner.settings
        if runtime.action_names and not [n for n in self.values["action_names"] if n] \
                and list(runtime.action_names) != s.action_names:
            raise ValueError(f"the model's action names {runtime.action_names} differ from the running "
                             f"{s.action_names}; restart the node to change them")
        if runtime.control_rate_hz and not self.values["control_rate_hz"] and runtime.rate_hz != s.control_rate_hz:
            raise ValueError(f"the model runs at {runtime.rate_hz} Hz, the node at {s.control_rate_hz} Hz; restart "
                             "the node (or set control_rate_hz) to change it")

    def _execute_steps(self, param: int, runtime: RuntimeSettings | None = None, chunk: int | None = None) -> int:
        """The parameter, else the model's runtime.json, else the model's whole chunk."""
        runtime, chunk = runtime or self.runtime, chunk or self.model_chunk
        if param:
            return param
        return runtime.execute_steps_for(chunk) if chunk else runtime.execute_steps or PolicySettings.execute_steps

    # --- parameters: validate, then apply -----------------------------------------------------

    def _validate(self, params) -> SetParametersResult:
        if self._reverting:
            return SetParametersResult(successful=True)
        changes = {p.name: p.value for p in params}
        value = lambda n: changes.get(n, self.node.get_parameter(n).value)  # noqa: E731
        try:
            check(PARAMS, changes)
            if any(n in changes for n in SWAP_PARAMS):
                if self.loading:
                    raise ValueError(f"a policy is still loading ({self.loading}); try again when it is done")
                self._check_runtime(check_model_folder(value("model_path")))
            if any(n in changes for n in LIMIT_PARAMS):
                SafetyLimits.build(len(self.runner.settings.action_names), value("action_lower"),
                                   value("action_upper"), value("max_step_delta"))
            if any(n in changes for n in SCHEDULE_PARAMS):
                check_schedule(self._execute_steps(value("execute_steps")), value("prefetch_steps"),
                               value("chunk_join"), value("blend_steps"))
        except ValueError as e:
            reason = f"kept the running policy: {e}" if any(n in changes for n in SWAP_PARAMS) else str(e)
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, params) -> None:
        if self._reverting:
            return
        changes = {p.name: p.value for p in params}
        self.values.update(changes)
        if any(n in changes for n in SWAP_PARAMS):
            cfg = {n: self.values[n] for n in SWAP_PARAMS}
            self.load_in_background(cfg, previous=dict(self._applied))
        if "max_observation_age_s" in changes:
            self.runner.observations.max_age_s = float(changes["max_observation_age_s"])
        if any(n in changes for n in LIMIT_PARAMS):
            self.runner.set_limits(self.values["action_lower"], self.values["action_upper"],
                                   self.values["max_step_delta"])
        if "hold_command" in changes:
            self.runner.set_hold_command(changes["hold_command"])
        if "stamp_mode" in changes:
            self.runner.set_stamp_mode(changes["stamp_mode"])
        if "latency_compensation" in changes:
            self.runner.settings.latency_compensation = bool(changes["latency_compensation"])
        if any(n in changes for n in SCHEDULE_PARAMS):
            v = self.values
            self.runner.set_schedule(self._execute_steps(v["execute_steps"]), v["prefetch_steps"], v["chunk_join"],
                                     v["blend_steps"])
        self._applied = {n: self.values[n] for n in SWAP_PARAMS}

    # --- services and status --------------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> str:
        hold = self.runner.set_enabled(enabled, self.now())
        if hold is not None:
            self.publish(hold)
        message = "enabled" if enabled else "disabled"
        self.log.info(f"policy {message}")
        return message

    def on_enable(self, request, response):
        response.success, response.message = True, self.set_enabled(request.data)
        return response

    def on_reset(self, request, response):
        self.runner.reset()
        response.success = True
        response.message = f"queue flushed, fault cleared; instruction {self.runner.observations.instruction()!r}"
        return response

    def publish_diagnostics(self) -> None:
        s = self.runner.status()
        level = ERROR if s["fault"] else (OK if s["enabled"] else WARN)
        message = f"fault: {s['fault']}" if s["fault"] else ("running" if s["enabled"] else "disabled (call ~/enable)")
        if self.runner.predictor is None:
            level = ERROR
            message = f"loading {self.loading}" if self.loading else "no model loaded"
        predictor = self.runner.predictor
        chosen = predictor.describe() if hasattr(predictor, "describe") else {}  # device, backend, forward: why
        values = {"model": self.model_label, "loading": self.loading, "last_load_error": self.last_load_error,
                  **{k: chosen.get(k) for k in ("device", "device_reason", "backend_reason", "forward")},
                  **{name: _tuning(predictor, name) for name in TUNINGS},
                  "dry_run": self.node.get_parameter("dry_run").value,
                  "control_rate_hz": self.runner.settings.control_rate_hz,
                  **{k: v for k, v in s.items() if k not in ("enabled", "rejected")},
                  **{f"rejected_{k}": v for k, v in s["rejected"].items()}}
        publish_status(self.node, self.diag_pub, "bitvla_policy", level, message, values, self.model_label)

    def close(self) -> None:
        """Stop the threads and take everything this interface made off the node."""
        self._stop.set()
        self._worker.join(timeout=5)
        self._loads.shutdown(wait=False, cancel_futures=True)
        node = self.node
        node.remove_on_set_parameters_callback(self._validate)
        node.remove_post_set_parameters_callback(self._apply)
        for entity in self.subscriptions:
            node.destroy_subscription(entity)
        for entity in self.timers:
            node.destroy_timer(entity)
        for entity in self.services:
            node.destroy_service(entity)
        node.destroy_publisher(self.command_pub)
        node.destroy_publisher(self.diag_pub)


# What was measured on this machine for the loaded model: the kernel backend (`auto`), attention,
# and RMSNorm/GLU (kernels/autotune.py), each with the timings behind it.
TUNINGS = ("kernel_tuning", "attention_tuning", "elementwise_tuning")


def _tuning(predictor, name: str = "kernel_tuning") -> str:
    """A measured CPU choice of the loaded model, with its timings ('' if none)."""
    tuning = getattr(getattr(predictor, "model", None), name, None)
    return tuning.describe() if tuning is not None else ""


def declare_policy_parameters(node: Node) -> dict:
    values = declare(node, PARAMS)
    if values["num_threads"] > 0:
        import torch

        torch.set_num_threads(values["num_threads"])
    if values["seed"] >= 0:
        from bitvla_ros.sim.protocol import seed_everything

        seed_everything(values["seed"])
    return values


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("bitvla_policy", **kwargs)
        self.values = declare_policy_parameters(self)
        self.policy = PolicyInterface(self, self.values)
        self.create_service(SetBool, "~/enable", self.policy.on_enable)
        if self.values["model_path"]:
            self.policy.load_in_background({n: self.values[n] for n in SWAP_PARAMS}, previous=None)
        else:
            self.get_logger().warning("model_path is empty: no commands until it is set")

    @property
    def runner(self) -> PolicyRunner:
        return self.policy.runner

    def make_executor(self):
        return make_executor(self.values["executor"])

    def destroy_node(self):
        self.policy.close()
        return super().destroy_node()


def main(args=None) -> None:
    run(PolicyNode, args=args)


if __name__ == "__main__":
    main()
