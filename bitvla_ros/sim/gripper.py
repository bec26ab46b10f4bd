"""Conversions between the model's and LIBERO's conventions (pure numpy, no simulator).

Gripper: LIBERO's env action is −1 = open, +1 = close. BitVLA's training targets are 1 = open,
0 = close (the RLDS transform clips the env value to [0, 1] and inverts it), and the published eval
maps the model's output back with 2g − 1, sign(), then a sign flip (docs/libero.md).

Orientation: LIBERO's proprio holds the end-effector orientation as axis-angle, converted from
robosuite's xyzw quaternion with robosuite's own formula (docs/libero.md), reproduced exactly here
so that the proprio matches what the model was trained on.
"""

from __future__ import annotations

import math

import numpy as np


def model_to_env_gripper(g: float) -> float:
    """Model gripper g (1 = open, 0 = close) → env command: g > 0.5 → −1 (open), g < 0.5 → +1 (close).

    Exactly 0.5 gives 0, as the published eval's sign() does.
    """
    return -float(np.sign(2.0 * float(g) - 1.0))


def env_to_model_gripper(e: float) -> float:
    """Env gripper command (−1 = open, +1 = close) → training target: −1 → 1 (open), +1 → 0 (close)."""
    return 1.0 - float(np.clip(float(e), 0.0, 1.0))


def quat_xyzw_to_axis_angle(quat) -> np.ndarray:
    """Axis-angle (3,) of an xyzw quaternion, as robosuite's `quat2axisangle` computes it.

    The angle is 2·acos(w) in [0, 2π]: the sign of the quaternion is not canonicalised, because the
    dataset was made this way. The identity (and anything within float noise of it) gives zeros.
    """
    q = np.asarray(quat, dtype=np.float64)
    if q.shape != (4,):
        raise ValueError(f"expected an xyzw quaternion of shape (4,), got shape {q.shape}")
    w = min(max(q[3], -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(w) / den


def quat_xyzw_to_matrix(quat) -> np.ndarray:
    """Rotation matrix (3, 3) of an xyzw quaternion (normalised first)."""
    q = np.asarray(quat, dtype=np.float64)
    if q.shape != (4,):
        raise ValueError(f"expected an xyzw quaternion of shape (4,), got shape {q.shape}")
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
