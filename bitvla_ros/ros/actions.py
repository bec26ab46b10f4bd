"""Teleop action messages → action vectors, for the recorder (and anything that listens to commands)."""

from __future__ import annotations

import numpy as np

from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.ros.conversions import header_seconds

ACTION_TYPES = ("joint_trajectory", "float64_multiarray", "joint_state")


def _by_name(names, values, wanted: list[str], what: str) -> np.ndarray:
    names, values = list(names), list(values)
    if not wanted:
        return np.asarray(values, dtype=np.float64)
    if len(names) != len(values):
        raise Rejected("size_mismatch", f"{what} has {len(names)} names but {len(values)} values")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise Rejected("unknown_joints", f"{what} lacks {missing}; it names {names}")
    return np.asarray([values[index[n]] for n in wanted], dtype=np.float64)


def action_from_message(msg, kind: str, action_names: list[str], now: float) -> tuple[np.ndarray, float]:
    """(action vector in `action_names` order, stamp). A trajectory's first point is the command;
    Float64MultiArray has no header, so its stamp is the time it arrived."""
    if kind == "joint_trajectory":
        if not msg.points:
            raise Rejected("size_mismatch", "JointTrajectory has no points")
        names = msg.joint_names if len(msg.joint_names) else action_names
        vec = _by_name(names, msg.points[0].positions, action_names, "JointTrajectory")
        stamp = header_seconds(msg.header, now)
    elif kind == "joint_state":
        vec = _by_name(msg.name, msg.position, action_names, "JointState")
        stamp = header_seconds(msg.header, now)
    elif kind == "float64_multiarray":
        vec, stamp = np.asarray(msg.data, dtype=np.float64), now
    else:
        raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {kind!r}")
    return vec, stamp
