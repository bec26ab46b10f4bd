"""Limits on every command: absolute bounds (joint or action limits) and a maximum change per
control step. NaN or inf never passes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitvla_ros.policy.rejections import Rejected


def _vector(values, dim: int, fill: float, name: str) -> np.ndarray:
    if values is None or len(values) == 0:
        return np.full(dim, fill)
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return np.full(dim, float(v[0]))
    if v.shape != (dim,):
        raise ValueError(f"{name} has {v.size} values, expected 1 or {dim} (one per action dimension)")
    return v


@dataclass
class SafetyLimits:
    lower: np.ndarray
    upper: np.ndarray
    max_delta: np.ndarray

    @classmethod
    def build(cls, dim: int, lower=None, upper=None, max_delta=None) -> "SafetyLimits":
        lo = _vector(lower, dim, -np.inf, "lower limits")
        hi = _vector(upper, dim, np.inf, "upper limits")
        if (lo > hi).any():
            raise ValueError(f"lower limits exceed upper limits at dims {np.nonzero(lo > hi)[0].tolist()}")
        md = _vector(max_delta, dim, np.inf, "max_step_delta")
        if (md <= 0).any():
            raise ValueError("max_step_delta must be positive (use .inf for no limit)")
        return cls(lo, hi, md)


class SafetyFilter:
    """Clamp each command into bounds, and to within `max_delta` of the previous command."""

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self._previous: np.ndarray | None = None
        self.clamped = 0

    def reset(self, current: np.ndarray | None = None) -> None:
        """Forget the previous command; optionally start from the robot's current position."""
        self._previous = None if current is None else np.asarray(current, dtype=np.float64)

    def apply(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.limits.lower.shape:
            raise Rejected("size_mismatch", f"action has shape {a.shape}, limits expect {self.limits.lower.shape}")
        if not np.isfinite(a).all():
            raise Rejected("non_finite_action", f"the policy produced {a.tolist()}")
        out = np.clip(a, self.limits.lower, self.limits.upper)
        if self._previous is not None:
            out = np.clip(out, self._previous - self.limits.max_delta, self._previous + self.limits.max_delta)
        if not np.array_equal(out, a):
            self.clamped += 1
        self._previous = out
        return out

    def apply_chunk(self, chunk: np.ndarray) -> np.ndarray:
        return np.stack([self.apply(a) for a in chunk])

    @property
    def previous(self) -> np.ndarray | None:
        return self._previous
