"""A stand-in for ros2_control's joint_trajectory_controller: the rules it applies to a message.

What it does with a JointTrajectory received at time `t` (ros2_controllers' trajectory handling):
- header.stamp == 0 means "start at the controller's next update" (now);
- a trajectory whose last point is already past (start + last time_from_start < t) is rejected;
- a newer trajectory replaces the one running;
- sampling at a time past some points skips them; before the first point it interpolates
  linearly from the state at receipt (positions only: linear between points).
Tests feed it what the node sends and check that nothing is rejected and no point is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Received:
    start: float
    times: np.ndarray      # absolute time of each point
    positions: np.ndarray  # (n, dim)
    received_at: float
    state_at_receipt: np.ndarray


@dataclass
class TrajectoryController:
    dim: int
    state: np.ndarray = None
    accepted: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    skipped_points: int = 0
    total_points: int = 0

    def __post_init__(self):
        if self.state is None:
            self.state = np.zeros(self.dim)

    def receive(self, stamp: float, time_from_start, positions, now: float) -> bool:
        """True if accepted. `stamp` 0.0 means start at once."""
        tfs = np.asarray(time_from_start, dtype=np.float64)
        if len(tfs) == 0 or np.any(np.diff(tfs) <= 0) or tfs[0] < 0:
            self.rejected.append(("bad timing", stamp, tfs))
            return False
        start = now if stamp == 0.0 else stamp
        times = start + tfs
        if times[-1] < now:
            self.rejected.append(("ends in the past", stamp, tfs))
            return False
        self.total_points += len(times)
        self.skipped_points += int((times < now).sum())
        self.accepted.append(Received(start, times, np.asarray(positions, dtype=np.float64), now, self.state.copy()))
        return True

    def sample(self, t: float) -> np.ndarray:
        """The commanded position at `t` under the running trajectory (held after its end)."""
        if not self.accepted:
            return self.state
        r = self.accepted[-1]
        times = np.concatenate([[r.received_at], r.times])
        points = np.vstack([r.state_at_receipt, r.positions])
        if t >= times[-1]:
            return points[-1]
        return np.array([np.interp(t, times, points[:, d]) for d in range(self.dim)])
