"""Which action is due now, when to ask for the next chunk, and how a new chunk joins the queue.

The queue is indexed by time, not by ticks: every queued action carries the start of its control
slot (`policy/timing.py`), so a late tick or a slow inference never sends the past. A chunk from an
observation stamped `o` is planned to run its first `execute_steps` actions; the next observation is
wanted `execute_steps - prefetch_steps` periods after the previous one was wanted (a nominal
schedule, so waiting for a camera frame does not slow the chunk rate). A chunk that arrives while
actions are still queued (prefetch) replaces them from its first live action on, or blends into
them over `blend_steps` actions; dimensions named in `frozen_dims` (the gripper) are never blended,
since half-open is not a gripper command. See docs/node.md.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bitvla_ros.policy.timing import EPS, first_live

JOINS = ("replace", "blend")


@dataclass(frozen=True)
class ScheduledAction:
    action: np.ndarray  # the command, already through the safety filter
    index: int          # position in its chunk
    chunk_id: int
    stamp: float        # stamp of the observation the chunk was computed from
    due: float          # start of its control slot


def check_schedule(execute_steps: int, prefetch_steps: int, join: str, blend_steps: int) -> None:
    """Raise ValueError (what was expected, what was given) for a schedule that cannot run."""
    if execute_steps < 1:
        raise ValueError(f"execute_steps must be at least 1, got {execute_steps}")
    if not 0 <= prefetch_steps < execute_steps:
        raise ValueError(f"prefetch_steps must be in [0, execute_steps) = [0, {execute_steps}), got {prefetch_steps}")
    if join not in JOINS:
        raise ValueError(f"chunk_join must be one of {JOINS}, got {join!r}")
    if blend_steps < 1:
        raise ValueError(f"blend_steps must be at least 1, got {blend_steps}")


class ChunkScheduler:
    def __init__(self, period: float, execute_steps: int, prefetch_steps: int = 0, join: str = "replace",
                 blend_steps: int = 3, frozen_dims=()):
        if period <= 0:
            raise ValueError(f"the control period must be positive, got {period}")
        self.period, self.frozen_dims = period, list(frozen_dims)
        self.execute_steps = self.prefetch_steps = self.blend_steps = 0
        self.join = ""
        self.configure(execute_steps, prefetch_steps, join, blend_steps)
        self._queue: deque[ScheduledAction] = deque()
        self._chunks = 0
        self.in_flight = False
        self.replan_at = -math.inf  # when the next observation is wanted
        self.current: ScheduledAction | None = None  # the action whose slot started last
        self.dropped_late = 0       # queued actions whose slot ended before they could be sent

    def configure(self, execute_steps: int | None = None, prefetch_steps: int | None = None, join: str | None = None,
                  blend_steps: int | None = None) -> None:
        """Change the schedule (checked whole first; the next chunk follows it)."""
        new = (self.execute_steps if execute_steps is None else execute_steps,
               self.prefetch_steps if prefetch_steps is None else prefetch_steps,
               self.join if join is None else join, self.blend_steps if blend_steps is None else blend_steps)
        check_schedule(*new)
        self.execute_steps, self.prefetch_steps, self.join, self.blend_steps = new

    @property
    def replan_every(self) -> float:
        return (self.execute_steps - self.prefetch_steps) * self.period

    def needs_inference(self, now: float) -> bool:
        return not self.in_flight and now >= self.replan_at - EPS

    def start_inference(self) -> None:
        self.in_flight = True

    def inference_failed(self) -> None:
        self.in_flight = False

    def advance(self, now: float, lookahead: float = 0.0) -> ScheduledAction | None:
        """Move past every action whose slot has started by `now + lookahead`; return the newest
        of them if its slot has not ended yet (None if nothing new started)."""
        started = None
        while self._queue and self._queue[0].due <= now + lookahead + EPS:
            started = self._queue.popleft()
            self.current = started
        if started is not None and started.due + self.period <= now - EPS:
            self.dropped_late += 1  # every slot it could be sent in is over
            return None
        return started

    def pop(self, now: float) -> ScheduledAction | None:
        """The action to stream at a control tick: the one whose slot start is nearest to `now`
        (within half a period), so tick jitter neither repeats nor skips an action."""
        return self.advance(now, lookahead=self.period / 2)

    def load(self, chunk: np.ndarray, stamp: float, now: float,
             make_safe: Callable[[np.ndarray, np.ndarray | None], np.ndarray]) -> list[ScheduledAction]:
        """Queue the live part of a new chunk (from `stamp`, arriving at `now`), joined with what is
        still queued. `make_safe(plan, previous)` filters the plan from the action executing now.
        Returns the queued plan; empty when the whole window is already past (a late chunk)."""
        self.in_flight = False
        self.advance(now)
        skip = first_live(stamp, now, self.period)
        end = min(len(chunk), max(self.execute_steps, skip + 1))
        self._replan_after(stamp)
        if skip >= end:
            self.replan_at = now  # nothing of it is still ahead: ask again at once
            return []
        dues = stamp + np.arange(skip, end) * self.period
        plan = np.array(chunk[skip:end], dtype=np.float64)
        if self.join == "blend":
            plan = self._blend(plan, dues, now)
        previous = None if self.current is None else self.current.action
        safe = make_safe(plan, previous)
        self._chunks += 1
        self._queue = deque(ScheduledAction(np.asarray(a), skip + k, self._chunks, stamp, float(d))
                            for k, (a, d) in enumerate(zip(safe, dues)))
        return list(self._queue)

    def _replan_after(self, stamp: float) -> None:
        """Next wanted observation: one re-plan interval after the last wanted one, so frame
        waits do not add up; re-anchored on this observation when the schedule fell behind."""
        every = self.replan_every
        nominal = self.replan_at + every
        if not math.isfinite(nominal) or nominal < stamp + every / 2:
            nominal = stamp + every
        self.replan_at = nominal

    def _blend(self, plan: np.ndarray, dues: np.ndarray, now: float) -> np.ndarray:
        """Weighted blend of the new plan into the queued one over the first `blend_steps`
        actions that overlap in time: the new plan's weight ramps up from 1/(n+1) to n/(n+1)."""
        old = list(self._queue)
        if self.current is not None and self.current.due + self.period > now + EPS:
            old.insert(0, self.current)  # the slot executing now is part of the old plan too
        if not old:
            return plan
        old_dues = np.array([q.due for q in old])
        out = plan.copy()
        mix = np.ones(plan.shape[1], dtype=bool)
        mix[self.frozen_dims] = False
        for k in range(min(self.blend_steps, len(plan))):
            j = int(np.argmin(np.abs(old_dues - dues[k])))
            if abs(old_dues[j] - dues[k]) >= self.period / 2:
                continue  # the old plan does not reach this slot
            w = (k + 1) / (self.blend_steps + 1)
            out[k, mix] = w * plan[k, mix] + (1 - w) * old[j].action[mix]
        return out

    def planned(self) -> list[ScheduledAction]:
        return list(self._queue)

    def flush(self) -> None:
        """Drop queued actions and ask for a new chunk at once; a chunk being computed is
        discarded by its caller."""
        self._queue.clear()
        self.in_flight = False
        self.replan_at = -math.inf

    def __len__(self) -> int:
        return len(self._queue)
