"""Why an input or an observation was refused, counted per cause for /diagnostics."""

from __future__ import annotations

import threading
from collections import Counter


class Rejected(ValueError):
    """An input or observation that must not move the robot. ``cause`` is a short stable key."""

    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause, self.detail = cause, detail


class RejectionLog:
    """Counts by cause, and says when a cause should be logged again (one line per cause per
    ``interval_s``, so a flood of bad messages gives one log line, not thousands)."""

    def __init__(self, interval_s: float = 5.0):
        self.counts: Counter[str] = Counter()
        self.interval_s = interval_s
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, rejection: Rejected, now: float) -> bool:
        """Count it; True if the caller should log it now."""
        with self._lock:
            self.counts[rejection.cause] += 1
            last = self._last_logged.get(rejection.cause)
            if last is None or now - last >= self.interval_s:
                self._last_logged[rejection.cause] = now
                return True
            return False

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
