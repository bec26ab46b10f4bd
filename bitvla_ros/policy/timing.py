"""What an action chunk means in time, and the stamps a trajectory carries.

A chunk computed from an observation stamped `o` is a plan for the control ticks from `o` on:
action `i` is the command for the slot that starts at `o + i·period` (its *due* time), and as a
trajectory point it is the position to reach at the end of that slot, `o + (i+1)·period`. When the
chunk comes back at `now`, the slots that already ended are the past: those actions are dropped,
never sent. The rules a `joint_trajectory_controller` applies to what we send (see docs/node.md):
a non-zero `header.stamp` whose whole trajectory ends before receipt is rejected, points already
past are skipped, and before the first point it interpolates from the current state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# observation: header.stamp = the observation's stamp, points at their planned times after it.
# now:         header.stamp = the present, the same points re-timed from it.
# zero:        header.stamp = 0 ("start at the controller's next update"), points as for `now`;
#              needs no clock shared with the controller, so it is the default.
STAMP_MODES = ("zero", "now", "observation")
EPS = 1e-6  # seconds: stamps travel as integer nanoseconds, so compare with a little slack


def first_live(obs_stamp: float, now: float, period: float) -> int:
    """Index of the first action of a chunk from `obs_stamp` whose slot has not ended at `now`."""
    elapsed = max(0.0, now - obs_stamp)
    return int(math.floor(elapsed / period + EPS))


def slot_index(due_times: np.ndarray, now: float, period: float) -> int:
    """Index of the action whose slot contains `now` (-1 before the first, len if all ended)."""
    started = np.nonzero(due_times <= now + EPS)[0]
    if len(started) == 0:
        return -1
    last = int(started[-1])
    return last if now < due_times[last] + period - EPS else len(due_times)


@dataclass(frozen=True)
class TrajectoryTiming:
    stamp: float              # header.stamp in seconds; 0.0 means "start at once"
    time_from_start: list[float]


def trajectory_timing(due_times, obs_stamp: float, now: float, period: float, stamp_mode: str) -> TrajectoryTiming:
    """Header stamp and per-point time_from_start for a plan whose actions are due at `due_times`.

    Every point is timed at the end of its slot, so each lies in the future at `now` when the plan
    holds only live actions; with `observation` the times are counted from the observation's stamp
    instead of from `now` (the same instants on a shared clock)."""
    if stamp_mode not in STAMP_MODES:
        raise ValueError(f"stamp_mode must be one of {STAMP_MODES}, got {stamp_mode!r}")
    targets = np.asarray(due_times, dtype=np.float64) + period
    if stamp_mode == "observation":
        return TrajectoryTiming(obs_stamp, [float(t - obs_stamp) for t in targets])
    # Never a point at or before the present: a controller would skip it.
    times = [max(float(t - now), EPS) for t in targets]
    return TrajectoryTiming(now if stamp_mode == "now" else 0.0, times)
