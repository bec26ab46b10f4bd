"""Rolling latency percentiles for /diagnostics."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class LatencyWindow:
    def __init__(self, size: int = 200):
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentile(self, q: float) -> float | None:
        with self._lock:
            return float(np.percentile(self._values, q)) if self._values else None

    def __len__(self) -> int:
        return len(self._values)
