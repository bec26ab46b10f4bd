"""Limits on every command: absolute bounds (joint or action limits) and a maximum change from the
command in effect. NaN or inf never passes: it raises, and the runner turns that into a fault."""

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
    """Clamp each command into bounds, and to within `max_delta` of the command before it."""

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.clamped = 0

    def apply(self, action: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.limits.lower.shape:
            raise Rejected("size_mismatch", f"action has shape {a.shape}, limits expect {self.limits.lower.shape}")
        if not np.isfinite(a).all():
            raise Rejected("non_finite_action", f"the policy produced {a.tolist()}")
        out = np.clip(a, self.limits.lower, self.limits.upper)
        if previous is not None:
            out = np.clip(out, previous - self.limits.max_delta, previous + self.limits.max_delta)
        if not np.array_equal(out, a):
            self.clamped += 1
        return out

    def apply_plan(self, plan: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """A plan of consecutive commands, each limited against the one before it (the first
        against `previous`, the command in effect). Raises before anything of it is used."""
        out = []
        for a in plan:
            previous = self.apply(a, previous)
            out.append(previous)
        return np.stack(out)
