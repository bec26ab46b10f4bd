"""The latest sample of every input, and a complete, fresh observation assembled from them.

Subscription callbacks only store: `put_image`, `put_joint_state`, `set_instruction` validate their
input and keep the latest value with its stamp. Inference asks for `snapshot(now)`, which refuses
(raises `Rejected`) unless every camera and every proprio joint has been seen, an instruction is
set, and the oldest sample is at most `max_age_s` old. With `history`, the last samples of each
input are kept too, so `complete_at(stamp)` can assemble an observation published with one stamp on
several topics even when the next one's parts are handled before its own last part.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from bitvla_ros.policy.rejections import Rejected

MAX_INSTRUCTION_CHARS = 1000


@dataclass(frozen=True)
class Observation:
    images: list[np.ndarray]  # uint8 RGB, in model camera order
    proprio: np.ndarray       # float64, in `proprio_names` order (raw, not normalized)
    instruction: str
    stamp: float              # oldest sample stamp (s): the observation is as old as its oldest part
    instruction_version: int  # bumps on every new instruction, so stale chunks can be dropped


class ObservationBuffer:
    def __init__(self, camera_names: list[str], proprio_names: list[str], max_age_s: float, history: int = 0):
        if not camera_names:
            raise ValueError("at least one camera is needed; set image_topics")
        if len(set(proprio_names)) != len(proprio_names):
            raise ValueError(f"proprio_names has duplicates: {proprio_names}")
        self.camera_names, self.proprio_names, self.max_age_s = list(camera_names), list(proprio_names), max_age_s
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._joints: dict[str, tuple[float, float]] = {}
        self._instruction: tuple[str, int] | None = None
        self._version = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # wakes an inference waiting for fresh input
        # Per camera / joint name: the last `history` (value, stamp) pairs, for complete_at.
        self._history: dict[str, deque] = {n: deque(maxlen=history) for n in self.camera_names + self.proprio_names} \
            if history > 0 else {}

    # --- inputs (called from subscription callbacks) --------------------------------------------

    def put_image(self, camera: str, image: np.ndarray, stamp: float) -> None:
        if camera not in self.camera_names:
            raise Rejected("unknown_camera", f"no camera named {camera!r}; cameras: {self.camera_names}")
        with self._lock:
            self._images[camera] = (image, stamp)
            self._remember(camera, image, stamp)
            self._arrived.notify_all()

    def put_joint_state(self, names, positions, stamp: float) -> None:
        """Merge a JointState by name. Names outside `proprio_names` are ignored (robots publish
        more joints than a policy reads); a message with none of them is refused."""
        names, positions = list(names), list(positions)
        if len(names) != len(positions):
            raise Rejected("size_mismatch", f"JointState has {len(names)} names but {len(positions)} positions")
        wanted = {n: p for n, p in zip(names, positions) if n in self.proprio_names}
        if self.proprio_names and not wanted:
            raise Rejected("unknown_joints", f"none of the joint names {names[:8]} is in proprio_names "
                                             f"{self.proprio_names}; set proprio_names to the robot's joint names")
        bad = {n: p for n, p in wanted.items() if not math.isfinite(p)}
        if bad:
            raise Rejected("non_finite_proprio", f"joint positions are not finite: {bad}")
        with self._lock:
            for n, p in wanted.items():
                self._joints[n] = (float(p), stamp)
                self._remember(n, float(p), stamp)
            self._arrived.notify_all()

    def _remember(self, name: str, value, stamp: float) -> None:
        if self._history:
            self._history[name].append((value, stamp))

    def set_instruction(self, text: str) -> bool:
        """Store a new instruction; True if it differs from the current one (the queue is flushed)."""
        if not isinstance(text, str) or not text.strip():
            raise Rejected("bad_instruction", "the instruction is empty")
        if len(text) > MAX_INSTRUCTION_CHARS:
            raise Rejected("bad_instruction", f"the instruction has {len(text)} characters, more than "
                                              f"{MAX_INSTRUCTION_CHARS}")
        text = text.strip()
        with self._lock:
            if self._instruction is not None and self._instruction[0] == text:
                return False
            self._version += 1
            self._instruction = (text, self._version)
            return True

    def wait_for_input(self, timeout: float) -> None:
        """Block until the next image or joint state is stored, or `timeout` seconds pass."""
        with self._arrived:
            self._arrived.wait(timeout)

    # --- assembly (called by the inference loop) ------------------------------------------------

    def snapshot(self, now: float) -> Observation:
        with self._lock:
            missing_cams = [c for c in self.camera_names if c not in self._images]
            if missing_cams:
                raise Rejected("missing_camera", f"no image yet from {missing_cams}")
            missing = [n for n in self.proprio_names if n not in self._joints]
            if missing:
                raise Rejected("missing_proprio", f"no position yet for joints {missing}")
            if self._instruction is None:
                raise Rejected("no_instruction", "no instruction received yet")
            stamps = [self._images[c][1] for c in self.camera_names] + [self._joints[n][1] for n in self.proprio_names]
            oldest = min(stamps)
            age = now - oldest
            if age > self.max_age_s:
                raise Rejected("stale", f"the oldest input is {age:.3f} s old, more than max_observation_age_s "
                                        f"{self.max_age_s}")
            return Observation(
                images=[self._images[c][0] for c in self.camera_names],
                proprio=np.array([self._joints[n][0] for n in self.proprio_names], dtype=np.float64),
                instruction=self._instruction[0],
                stamp=oldest,
                instruction_version=self._instruction[1],
            )

    def complete_at(self, stamp: float, tolerance: float = 1e-6) -> Observation | None:
        """The observation whose every part carries `stamp` (a simulator publishes them so), or
        None while a part is missing from the kept history. The recorder pairs each command with
        the exact state it answered this way; it needs `history` > 0."""
        if not self._history:
            raise ValueError("complete_at needs an ObservationBuffer made with history > 0")
        with self._lock:
            parts = {}
            for name, samples in self._history.items():
                value = next((v for v, s in reversed(samples) if abs(s - stamp) <= tolerance), None)
                if value is None:
                    return None
                parts[name] = value
            return Observation(images=[parts[c] for c in self.camera_names],
                               proprio=np.array([parts[n] for n in self.proprio_names], dtype=np.float64),
                               # The instruction is its own topic, not stamped: the caller's
                               # episode holds it (it may be handled after the parts).
                               instruction=self._instruction[0] if self._instruction else "", stamp=stamp,
                               instruction_version=self._version)

    def instruction(self) -> str | None:
        with self._lock:
            return None if self._instruction is None else self._instruction[0]

    def instruction_version(self) -> int:
        with self._lock:
            return self._version
