"""Which action to send now, and when to ask for the next chunk.

OFT executes the whole chunk open-loop before it re-plans; `execute_steps` can shorten that.
With `prefetch_steps` > 0 the next inference starts while that many actions are still queued, so
the robot need not wait for the model. A new instruction flushes the queue.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScheduledAction:
    action: np.ndarray
    index: int          # position in its chunk
    chunk_id: int
    stamp: float        # stamp of the observation the chunk was computed from


class ChunkScheduler:
    def __init__(self, execute_steps: int, prefetch_steps: int = 0):
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be at least 1, got {execute_steps}")
        if not 0 <= prefetch_steps < execute_steps:
            raise ValueError(f"prefetch_steps must be in [0, execute_steps), got {prefetch_steps}")
        self.execute_steps, self.prefetch_steps = execute_steps, prefetch_steps
        self._queue: deque[ScheduledAction] = deque()
        self._chunks = 0
        self.in_flight = False

    def needs_inference(self) -> bool:
        return not self.in_flight and len(self._queue) <= self.prefetch_steps

    def start_inference(self) -> None:
        self.in_flight = True

    def inference_failed(self) -> None:
        self.in_flight = False

    def load(self, chunk: np.ndarray, stamp: float) -> list[ScheduledAction]:
        """Queue the first `execute_steps` actions of a new chunk, replacing what is left of the
        previous one (the newer observation wins). Returns what was queued."""
        self.in_flight = False
        self._chunks += 1
        steps = min(self.execute_steps, len(chunk))
        self._queue = deque(ScheduledAction(np.asarray(chunk[i]), i, self._chunks, stamp) for i in range(steps))
        return list(self._queue)

    def pop(self) -> ScheduledAction | None:
        return self._queue.popleft() if self._queue else None

    def flush(self) -> None:
        """Drop queued actions; a chunk still being computed will be discarded by its caller."""
        self._queue.clear()
        self.in_flight = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def chunks_loaded(self) -> int:
        return self._chunks
