"""Episodes from live inputs: the recorder node's decisions, without ROS.

Two ways to pair observations with the teleoperator's actions:
- ``rate``: every tick at `record_rate_hz`, the latest image per camera, proprio and action make a
  frame (the action must be fresh too). For a human teleoperator.
- ``action``: every action message makes a frame with the observation carrying the action's own
  stamp — exact pairing for a teleoperator (or scripted expert) that stamps each command with the
  observation it answered, as the sim node does.
Observation assembly is the policy node's (`ObservationBuffer`), so both nodes refuse the same
incomplete or stale inputs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bitvla_ros.data.v3 import DatasetWriter
from bitvla_ros.policy.observation import ObservationBuffer
from bitvla_ros.policy.rejections import Rejected, RejectionLog

RATE, ACTION = "rate", "action"
HISTORY = 32  # samples kept per input, and commands waiting, for pairing by stamp


class RecordingSession:
    def __init__(self, open_writer: Callable[[], DatasetWriter], camera_names: list[str], proprio_names: list[str],
                 action_dim: int, max_age_s: float, mode: str = RATE):
        if mode not in (RATE, ACTION):
            raise ValueError(f"sample_mode must be {RATE!r} or {ACTION!r}, got {mode!r}")
        self.open_writer, self.mode, self.action_dim = open_writer, mode, action_dim
        # Action mode assembles observations by stamp from each input's recent samples: a command
        # may be handled after the next observation, and topics interleave.
        self.observations = ObservationBuffer(camera_names, proprio_names, max_age_s,
                                              history=HISTORY if mode == ACTION else 0)
        self.rejections = RejectionLog()
        self.writer: DatasetWriter | None = None
        self._action: tuple[np.ndarray, float] | None = None
        self._episode_start = 0.0
        self._pending: list[tuple[np.ndarray, float]] = []

    @property
    def recording(self) -> bool:
        return self.writer is not None and self.writer.recording

    # --- episodes ----------------------------------------------------------------------------

    def start(self, now: float, instruction: str | None = None) -> str:
        """Begin an episode with ``instruction`` (default: the latest on the instruction topic)."""
        if self.recording:
            raise RuntimeError("an episode is already being recorded; stop or discard it first")
        if instruction:
            self.observations.set_instruction(instruction)
        text = self.observations.instruction()
        if not text:
            raise RuntimeError("no instruction yet: publish one on the instruction topic or pass it to start")
        if self.writer is None:
            self.writer = self.open_writer()  # may raise DatasetWriteError / DatasetError: reported by the caller
        self.writer.start_episode(text)
        self._episode_start, self._action = now, None
        self._pending.clear()
        return text

    def stop(self) -> tuple[int, int]:
        """Save the episode atomically: (episode index, frames). On a write error the frames stay
        in memory, so stop can be retried (or the episode discarded)."""
        if not self.recording:
            raise RuntimeError("no episode is being recorded")
        frames = self.writer.frames_in_episode
        if frames == 0:
            self.writer.discard_episode()
            raise RuntimeError("the episode has no frames (were the cameras, joints and actions arriving?); "
                               "discarded it")
        return self.writer.save_episode(), frames

    def discard(self) -> int:
        if not self.recording:
            raise RuntimeError("no episode is being recorded")
        frames = self.writer.frames_in_episode
        self.writer.discard_episode()
        return frames

    # --- inputs ------------------------------------------------------------------------------

    def on_action(self, action, stamp: float, now: float) -> bool:
        """Store the teleop action; in `action` mode try to make its frame now. True if a frame
        was written."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.action_dim,):
            raise Rejected("size_mismatch", f"action has {a.size} values, expected {self.action_dim}")
        if not np.isfinite(a).all():
            raise Rejected("non_finite_action", f"action {a.tolist()} is not finite")
        self._action = (a, stamp)
        if self.mode != ACTION or not self.recording:
            return False
        self._pending.append((a, stamp))
        return self._pair(now)

    def on_observation(self, now: float) -> bool:
        """After a camera or joint sample: actions waiting for their observation may now make
        their frames."""
        if self.mode != ACTION:
            return False
        return self._pair(now)

    def tick(self, now: float) -> bool:
        """`rate` mode: one frame from the latest of everything."""
        if self.mode != RATE or not self.recording:
            return False
        try:
            obs = self.observations.snapshot(now)
            if self._action is None:
                raise Rejected("no_action", "no teleop action received in this episode yet")
            action, stamp = self._action
            if now - stamp > self.observations.max_age_s:
                raise Rejected("stale_action", f"the latest teleop action is {now - stamp:.3f} s old")
        except Rejected as r:
            self.rejections.record(r, now)
            return False
        self._write(obs, action, now)
        return True

    def _pair(self, now: float) -> bool:
        """Write pending actions, in order, whose observation is known. One that is still unknown
        while a later one is known will never be (observations arrive in order): it is dropped."""
        found = [self.observations.complete_at(stamp) for _, stamp in self._pending]
        last_known = max((i for i, obs in enumerate(found) if obs is not None), default=-1)
        wrote = False
        for i, ((action, stamp), obs) in enumerate(zip(self._pending[: last_known + 1], found)):
            if obs is None:
                self.rejections.record(Rejected("missed", f"no complete observation stamped {stamp:.6f}"), now)
            elif self.recording:
                self._write(obs, action, obs.stamp)  # the frame is as old as its observation, not its pairing
                wrote = True
        self._pending = self._pending[last_known + 1:][-HISTORY:]
        return wrote

    def _write(self, obs, action: np.ndarray, at: float) -> None:
        images = dict(zip(self.observations.camera_names, obs.images))
        self.writer.add_frame(images, obs.proprio, action, timestamp=max(0.0, at - self._episode_start))

    def status(self) -> dict:
        w = self.writer
        return {"recording": self.recording, "episodes": w.num_episodes if w else 0,
                "frames_in_episode": w.frames_in_episode if w and w.recording else 0,
                "skipped": self.rejections.snapshot()}
