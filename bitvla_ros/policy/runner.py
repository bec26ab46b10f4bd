"""The policy node's decisions, without ROS: when to infer, what to send, what to refuse.

Two loops drive it, each handing it the time. The inference loop calls `infer_once(now)`: when a
chunk is due and a fresh observation is there, it runs the predictor and queues the live part of
the chunk (`policy/scheduler.py`); for trajectory output it returns the plan to publish. The
control timer calls `tick(now)`: it advances the queue and, for stream output, returns the action
whose slot has come. Everything the robot receives passes the safety filter. Any failure — an
exception from preprocessing or the model, a non-finite action, a wrong shape — is a fault: no
command from it, a hold if `hold_command` says so (through the safety filter too), and nothing more
until `reset()` or re-enabling. The robot, the ROS evaluation and the in-process evaluation all
execute chunks through this one class (the latter with the simulator's clock). See docs/node.md.
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
from bitvla_ros.policy.scheduler import JOINS, ChunkScheduler, ScheduledAction
from bitvla_ros.policy.timing import EPS, STAMP_MODES, TrajectoryTiming, trajectory_timing

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
    chunk_join: str = "replace"
    blend_steps: int = 3
    blend_frozen: list[str] = field(default_factory=lambda: ["gripper"])  # action names never blended
    max_observation_age_s: float = 0.5
    command_type: str = TRAJECTORY
    stamp_mode: str = "zero"
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    max_step_delta: list[float] = field(default_factory=list)
    hold_command: str = "none"
    start_enabled: bool = False
    latency_compensation: bool = True  # False: a chunk starts when it arrives (stop and go, for slow models)

    def validate(self) -> "PolicySettings":
        if self.command_type not in (TRAJECTORY, STREAM):
            raise ValueError(f"command_type must be {TRAJECTORY!r} or {STREAM!r}, got {self.command_type!r}")
        if self.hold_command not in HOLD_MODES:
            raise ValueError(f"hold_command must be one of {HOLD_MODES}, got {self.hold_command!r}")
        if self.stamp_mode not in STAMP_MODES:
            raise ValueError(f"stamp_mode must be one of {STAMP_MODES}, got {self.stamp_mode!r}")
        if self.chunk_join not in JOINS:
            raise ValueError(f"chunk_join must be one of {JOINS}, got {self.chunk_join!r}")
        if self.control_rate_hz <= 0:
            raise ValueError(f"control_rate_hz must be positive, got {self.control_rate_hz}")
        if not self.action_names:
            raise ValueError("action_names is empty; name each action dimension (joint names for a joint policy)")
        return self

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate_hz


@dataclass(frozen=True)
class Command:
    """What to publish: one action (stream) or a plan of actions (trajectory), in robot units."""
    actions: np.ndarray  # (n, action_dim)
    due: np.ndarray      # (n,) start of each action's control slot
    stamp: float         # the observation's stamp (nan for a hold)
    chunk_id: int
    hold: bool = False


class PolicyRunner:
    def __init__(self, settings: PolicySettings, predictor=None, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] | None = None):
        """``clock`` tells the time a chunk comes back (the node's clock, or a simulator's);
        without one, the chunk is taken to arrive at the time `infer_once` was called with."""
        self.settings = s = settings.validate()
        self.log = log or (lambda message: None)
        self.clock = clock
        dim = len(s.action_names)
        self.observations = ObservationBuffer(s.camera_names, s.proprio_names, s.max_observation_age_s)
        frozen = [s.action_names.index(n) for n in s.blend_frozen if n in s.action_names]
        self.scheduler = ChunkScheduler(s.period, s.execute_steps, s.prefetch_steps, s.chunk_join, s.blend_steps,
                                        frozen)
        self.safety = SafetyFilter(SafetyLimits.build(dim, s.lower, s.upper, s.max_step_delta))
        self.rejections = RejectionLog()
        self.latency = LatencyWindow()
        self.tick_intervals = LatencyWindow()
        self.enabled = s.start_enabled
        self.fault: str | None = None
        self.chunks_published = 0
        self.last_observation_age: float | None = None
        self._last_tick: float | None = None
        self._streamed_chunk = 0
        self._last_sent: np.ndarray | None = None  # stream output: the command the robot has now
        self._predictor = None
        self._pending = None
        self._lock = threading.RLock()
        if predictor is not None:
            self._install(predictor)

    # --- policy management -----------------------------------------------------------------

    def check(self, predictor) -> None:
        """Raise ValueError unless `predictor`'s model fits these cameras, joints and actions."""
        cfg, s = predictor.model.config, self.settings
        if cfg.action_dim != len(s.action_names):
            raise ValueError(f"the model outputs {cfg.action_dim} action dims but action_names has "
                             f"{len(s.action_names)}: {s.action_names}")
        if cfg.num_images != len(s.camera_names):
            raise ValueError(f"the model takes {cfg.num_images} images but {len(s.camera_names)} "
                             f"cameras are configured: {s.camera_names}")
        if cfg.use_proprio and cfg.proprio_dim != len(s.proprio_names):
            raise ValueError(f"the model takes a {cfg.proprio_dim}-D proprio state but proprio_names has "
                             f"{len(s.proprio_names)}: {s.proprio_names}")

    def _install(self, predictor) -> None:
        self.check(predictor)
        self._predictor = predictor

    def stage(self, predictor) -> None:
        """Validate a new predictor now; it replaces the running one before the next inference."""
        self.check(predictor)  # raises on a mismatch, leaving the running one in place
        with self._lock:
            if self._predictor is None:
                self._predictor, self._pending = predictor, None
            else:
                self._pending = predictor

    def unload(self) -> None:
        with self._lock:
            self._predictor = self._pending = None
            self.scheduler.flush()

    @property
    def predictor(self):
        return self._predictor

    # --- control ---------------------------------------------------------------------------

    def set_enabled(self, enabled: bool, now: float = 0.0) -> Command | None:
        """Enable or disable. Disabling flushes the queue and returns a hold command if configured."""
        with self._lock:
            self.enabled = enabled
            self.scheduler.flush()
            if enabled:
                self.fault = None
                return None
            return self._hold(now)

    def set_limits(self, lower, upper, max_step_delta) -> None:
        """New bounds and step limit (raises ValueError, keeping the old ones, if they are invalid)."""
        limits = SafetyLimits.build(len(self.settings.action_names), lower, upper, max_step_delta)
        with self._lock:
            self.safety.limits = limits

    def set_schedule(self, execute_steps: int | None = None, prefetch_steps: int | None = None,
                     chunk_join: str | None = None, blend_steps: int | None = None) -> None:
        """A new schedule for the chunks to come (raises ValueError, keeping the old one, if invalid)."""
        with self._lock:
            sch = self.scheduler
            sch.configure(execute_steps, prefetch_steps, chunk_join, blend_steps)
            s = self.settings
            s.execute_steps, s.prefetch_steps, s.chunk_join, s.blend_steps = (sch.execute_steps, sch.prefetch_steps,
                                                                               sch.join, sch.blend_steps)

    def set_hold_command(self, mode: str) -> None:
        if mode not in HOLD_MODES:
            raise ValueError(f"hold_command must be one of {HOLD_MODES}, got {mode!r}")
        self.settings.hold_command = mode

    def set_stamp_mode(self, mode: str) -> None:
        if mode not in STAMP_MODES:
            raise ValueError(f"stamp_mode must be one of {STAMP_MODES}, got {mode!r}")
        self.settings.stamp_mode = mode

    def reset(self) -> None:
        """Flush the queue, clear a fault, and forget the command in effect for the delta limit."""
        with self._lock:
            self.scheduler.flush()
            self.scheduler.current = self._last_sent = None
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

    def _in_effect(self) -> np.ndarray | None:
        """The command the robot follows now: the last one streamed, or the plan's current point."""
        if self.settings.command_type == STREAM:
            return self._last_sent
        current = self.scheduler.current
        return None if current is None else current.action

    def _make_safe(self, plan: np.ndarray, current: np.ndarray | None) -> np.ndarray:
        """The safety filter on a plan joining the queue, from the command in effect."""
        return self.safety.apply_plan(plan, self._last_sent if self.settings.command_type == STREAM else current)

    def _hold(self, now: float) -> Command | None:
        """The hold command (`hold_command`), limited like any command against the one in effect."""
        mode, previous = self.settings.hold_command, self._in_effect()
        if mode == "none":
            return None
        target = np.zeros(len(self.settings.action_names)) if mode == "zero" else previous
        if target is None:
            return None
        action = self.safety.apply(target, previous)
        self.scheduler.current = ScheduledAction(action, 0, -1, float("nan"), now)
        self._last_sent = action
        return Command(action[None], np.array([now]), stamp=float("nan"), chunk_id=-1, hold=True)

    def _fail(self, reason: str, now: float) -> Command | None:
        with self._lock:
            if self.settings.command_type == TRAJECTORY:
                self.scheduler.advance(now)  # the plan's point now is the command in effect
            self.scheduler.flush()
            self.fault = reason
            hold = self._hold(now)
        self.log(f"policy faulted, no commands until ~/reset or re-enable: {reason}")
        return hold

    # --- the two loops -----------------------------------------------------------------------

    def inference_due(self, now: float) -> bool:
        return (self.enabled and not self.fault and self._predictor is not None
                and self.scheduler.needs_inference(now))

    def infer_once(self, now: float) -> Command | None:
        """Run one inference if one is due and a fresh observation is there. Returns the command to
        publish: the plan (trajectory output), a hold after a fault, or None."""
        with self._lock:
            if not self.inference_due(now):
                return None
            if self._pending is not None:  # swap between chunks
                self._predictor, self._pending = self._pending, None
            try:
                obs = self.observations.snapshot(now)
            except Rejected as r:
                self.report(r, now)
                return None
            wanted = self.scheduler.replan_at
            if obs.stamp < wanted - EPS and now - wanted < self.settings.period:
                return None  # wait (at most a control period) for the frame taken at the re-plan time
            self.last_observation_age = now - obs.stamp
            self.scheduler.start_inference()
            predictor = self._predictor
        try:
            chunk = predictor.predict(obs.images, obs.instruction, obs.proprio)
            actions = np.asarray(chunk.actions, dtype=np.float64)
            dim = len(self.settings.action_names)
            if actions.ndim != 2 or actions.shape[1] != dim or len(actions) == 0:
                raise Rejected("size_mismatch", f"the policy returned a chunk of shape {actions.shape}, "
                                                f"expected (n, {dim})")
            if not np.isfinite(actions).all():
                raise Rejected("non_finite_action", f"the policy returned a chunk with "
                                                    f"{int((~np.isfinite(actions)).sum())} non-finite values")
        except Exception as e:  # noqa: BLE001 - any failure must stop the robot, not the node
            return self._fail(f"inference failed: {type(e).__name__}: {e}", now)
        arrival = self.clock() if self.clock is not None else now
        with self._lock:
            if not self.enabled or self.fault or obs.instruction_version != self.observations.instruction_version():
                self.scheduler.inference_failed()  # outdated while it ran: drop it
                return None
            self.latency.add(chunk.inference_s)
            try:
                # Without compensation the plan is timed from its arrival: the arm waited for it.
                start = obs.stamp if self.settings.latency_compensation else arrival
                queued = self.scheduler.load(actions, start, arrival, self._make_safe)
            except Exception as e:  # noqa: BLE001 - the safety filter refused the plan
                return self._fail(f"safety filter: {type(e).__name__}: {e}", arrival)
            if not queued:
                self.report(Rejected("late_chunk", f"the chunk came back {arrival - obs.stamp:.3f} s after its "
                                                   "observation, past its last action"), arrival)
                return None
            if self.settings.command_type != TRAJECTORY:
                return None
            self.chunks_published += 1
            return Command(np.stack([q.action for q in queued]), np.array([q.due for q in queued]), obs.stamp,
                           queued[0].chunk_id)

    def tick(self, now: float) -> Command | None:
        """Advance the queue by one control step; for stream output, the action to publish."""
        with self._lock:
            if self._last_tick is not None and now > self._last_tick:
                self.tick_intervals.add(now - self._last_tick)
            self._last_tick = now
            if not self.enabled or self.fault:
                return None
            if self.settings.command_type != STREAM:
                self.scheduler.advance(now)
                return None
            item = self.scheduler.pop(now)
            if item is None:
                return None
            if item.chunk_id != self._streamed_chunk:
                self._streamed_chunk = item.chunk_id
                self.chunks_published += 1
            # again against what was last sent: a late tick may have skipped an action of the plan
            action = self.safety.apply(item.action, self._last_sent)
            self._last_sent = action
            return Command(action[None], np.array([item.due]), item.stamp, item.chunk_id)

    def trajectory(self, command: Command, now: float) -> TrajectoryTiming:
        """Header stamp and point times for publishing `command` as a trajectory at `now`."""
        stamp = now if command.hold else command.stamp  # a hold answers no observation
        return trajectory_timing(command.due, stamp, now, self.settings.period, self.settings.stamp_mode)

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
            "tick_interval_p50_s": self.tick_intervals.percentile(50),
            "tick_interval_p95_s": self.tick_intervals.percentile(95),
            "tick_interval_max_s": self.tick_intervals.percentile(100),
            "observation_age_s": self.last_observation_age,
            "queued_actions": len(self.scheduler),
            "dropped_late_actions": self.scheduler.dropped_late,
            "clamped_commands": self.safety.clamped,
            "execute_steps": self.settings.execute_steps,
            "stamp_mode": self.settings.stamp_mode,
            "rejected": self.rejections.snapshot(),
        }
