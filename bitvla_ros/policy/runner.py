"""The policy node's decisions, without ROS: when to infer, what to send, what to refuse.

Two loops drive it. The inference loop calls `infer_once(now)`: it takes a fresh observation,
runs the predictor, queues the chunk and, for trajectory output, returns the whole queued plan.
The control timer calls `tick(now)` at `control_rate_hz`: it advances the queue and, for stream
output, returns the next action. Everything the robot receives passes the safety filter, and
nothing is sent while disabled, faulted, or from a refused observation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bitvla_ros.policy.latency import LatencyWindow
from bitvla_ros.policy.observation import ObservationBuffer
from bitvla_ros.policy.rejections import Rejected, RejectionLog
from bitvla_ros.policy.safety import SafetyFilter, SafetyLimits
from bitvla_ros.policy.scheduler import ChunkScheduler

TRAJECTORY, STREAM = "joint_trajectory", "float64_multiarray"
HOLD_MODES = ("none", "last", "zero")


@dataclass
class PolicySettings:
    camera_names: list[str]
    proprio_names: list[str]
    action_names: list[str]
    control_rate_hz: float = 20.0
    execute_steps: int = 8
    prefetch_steps: int = 0
    max_observation_age_s: float = 0.5
    command_type: str = TRAJECTORY
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    max_step_delta: list[float] = field(default_factory=list)
    hold_command: str = "none"
    start_enabled: bool = False

    def validate(self) -> "PolicySettings":
        if self.command_type not in (TRAJECTORY, STREAM):
            raise ValueError(f"command_type must be {TRAJECTORY!r} or {STREAM!r}, got {self.command_type!r}")
        if self.hold_command not in HOLD_MODES:
            raise ValueError(f"hold_command must be one of {HOLD_MODES}, got {self.hold_command!r}")
        if self.control_rate_hz <= 0:
            raise ValueError(f"control_rate_hz must be positive, got {self.control_rate_hz}")
        if not self.action_names:
            raise ValueError("action_names is empty; name each action dimension (joint names for a joint policy)")
        return self


@dataclass(frozen=True)
class Command:
    """What to publish: one action (stream) or a plan of actions (trajectory), in robot units."""
    actions: np.ndarray  # (n, action_dim)
    stamp: float         # the observation's stamp
    chunk_id: int
    hold: bool = False


class PolicyRunner:
    def __init__(self, settings: PolicySettings, predictor=None, log: Callable[[str], None] | None = None):
        self.settings = settings.validate()
        self.log = log or (lambda message: None)
        dim = len(settings.action_names)
        self.observations = ObservationBuffer(settings.camera_names, settings.proprio_names,
                                              settings.max_observation_age_s)
        self.scheduler = ChunkScheduler(settings.execute_steps, settings.prefetch_steps)
        self.safety = SafetyFilter(SafetyLimits.build(dim, settings.lower, settings.upper, settings.max_step_delta))
        self.rejections = RejectionLog()
        self.latency = LatencyWindow()
        self.enabled = settings.start_enabled
        self.fault: str | None = None
        self.chunks_published = 0
        self.last_observation_age: float | None = None
        self._predictor = None
        self._pending = None
        self._lock = threading.RLock()
        if predictor is not None:
            self._install(predictor)

    # --- policy management -----------------------------------------------------------------

    def _install(self, predictor) -> None:
        cfg = predictor.model.config
        if cfg.action_dim != len(self.settings.action_names):
            raise ValueError(f"the model outputs {cfg.action_dim} action dims but action_names has "
                             f"{len(self.settings.action_names)}: {self.settings.action_names}")
        if cfg.num_images != len(self.settings.camera_names):
            raise ValueError(f"the model takes {cfg.num_images} images but {len(self.settings.camera_names)} "
                             f"cameras are configured: {self.settings.camera_names}")
        if cfg.use_proprio and cfg.proprio_dim != len(self.settings.proprio_names):
            raise ValueError(f"the model takes a {cfg.proprio_dim}-D proprio state but proprio_names has "
                             f"{len(self.settings.proprio_names)}: {self.settings.proprio_names}")
        self._predictor = predictor

    def stage(self, predictor) -> None:
        """Validate a new predictor now; it replaces the running one before the next inference."""
        with self._lock:
            current = self._predictor
            self._install(predictor)  # raises on a mismatch, leaving `current` in place
            self._predictor = current
            self._pending = predictor
            if current is None:
                self._predictor, self._pending = predictor, None

    @property
    def predictor(self):
        return self._predictor

    # --- control ---------------------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> Command | None:
        """Enable or disable. Disabling flushes the queue and returns a hold command if configured."""
        with self._lock:
            self.enabled = enabled
            if enabled:
                self.fault = None
                return None
            self.scheduler.flush()
            return self._hold()

    def set_limits(self, lower, upper, max_step_delta) -> None:
        """New bounds and step limit (raises ValueError, keeping the old ones, if they are invalid)."""
        limits = SafetyLimits.build(len(self.settings.action_names), lower, upper, max_step_delta)
        with self._lock:
            self.safety.limits = limits

    def reset(self) -> None:
        """Flush the queue, clear a fault, and forget the previous command for the delta limit."""
        with self._lock:
            self.scheduler.flush()
            self.safety.reset()
            self.fault = None

    def report(self, rejection: Rejected, now: float) -> None:
        """Count a refused input or observation; log it at most once per cause per interval."""
        if self.rejections.record(rejection, now):
            n = self.rejections.counts[rejection.cause]
            self.log(f"refused ({n} so far): {rejection}")

    def set_instruction(self, text: str) -> bool:
        """A new instruction flushes what was planned for the old one."""
        changed = self.observations.set_instruction(text)
        if changed:
            with self._lock:
                self.scheduler.flush()
        return changed

    def _hold(self) -> Command | None:
        mode, prev = self.settings.hold_command, self.safety.previous
        if mode == "none":
            return None
        action = np.zeros(len(self.settings.action_names)) if mode == "zero" else prev
        if action is None:
            return None
        return Command(np.asarray(action, dtype=np.float64)[None], stamp=float("nan"), chunk_id=-1, hold=True)

    # --- the two loops -----------------------------------------------------------------------

    def infer_once(self, now: float) -> Command | None:
        """Run one inference if one is due. Returns the trajectory to publish (trajectory output),
        or None. A refused observation is counted; a predictor exception faults the runner."""
        with self._lock:
            if not self.enabled or self.fault or self._predictor is None or not self.scheduler.needs_inference():
                return None
            if self._pending is not None:  # swap between chunks
                self._predictor, self._pending = self._pending, None
            try:
                obs = self.observations.snapshot(now)
            except Rejected as r:
                self.report(r, now)
                return None
            self.last_observation_age = now - obs.stamp
            self.scheduler.start_inference()
            predictor = self._predictor
        try:
            chunk = predictor.predict(obs.images, obs.instruction, obs.proprio)
        except Exception as e:  # noqa: BLE001 - any model failure must stop the robot, not the node
            with self._lock:
                self.scheduler.inference_failed()
                self.fault = f"inference failed: {type(e).__name__}: {e}"
            self.log(f"policy faulted, publishing stopped until ~/reset or re-enable: {self.fault}")
            return None
        with self._lock:
            if (not self.enabled or self.fault or obs.instruction_version != self.observations.instruction_version()):
                self.scheduler.inference_failed()  # outdated while it ran: drop it
                return None
            self.latency.add(chunk.inference_s)
            queued = self.scheduler.load(chunk.actions, obs.stamp)
            if self.settings.command_type != TRAJECTORY:
                return None
            plan = self.safety.apply_chunk(np.stack([q.action for q in queued]))
            self.chunks_published += 1
            return Command(plan, obs.stamp, queued[0].chunk_id)

    def tick(self, now: float) -> Command | None:
        """Advance the queue by one control step; for stream output, the action to publish."""
        with self._lock:
            if not self.enabled or self.fault:
                return None
            item = self.scheduler.pop()
            if item is None or self.settings.command_type != STREAM:
                return None
            action = self.safety.apply(item.action)
            if item.index == 0:
                self.chunks_published += 1
            return Command(action[None], item.stamp, item.chunk_id)

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict:
        p = self._predictor
        return {
            "enabled": self.enabled,
            "fault": self.fault or "",
            "backend": getattr(getattr(p, "model", None), "backend_name", None) or "",
            "chunks_published": self.chunks_published,
            "latency_p50_s": self.latency.percentile(50),
            "latency_p95_s": self.latency.percentile(95),
            "observation_age_s": self.last_observation_age,
            "queued_actions": len(self.scheduler),
            "clamped_commands": self.safety.clamped,
            "rejected": self.rejections.snapshot(),
        }
