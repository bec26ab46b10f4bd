"""Gripper and quaternion conventions between BitVLA and LIBERO, against hand-computed values."""

import math

import numpy as np
import pytest

from bitvla_ros.sim.gripper import (
    env_to_model_gripper,
    model_to_env_gripper,
    quat_xyzw_to_axis_angle,
    quat_xyzw_to_matrix,
)


@pytest.mark.parametrize("g, expected", [
    (1.0, -1.0),   # model open → env open
    (0.9, -1.0),
    (0.51, -1.0),
    (0.5, 0.0),    # the published eval's sign(0) = 0
    (0.49, 1.0),
    (0.0, 1.0),    # model close → env close
])
def test_model_to_env_gripper(g, expected):
    assert model_to_env_gripper(g) == expected


@pytest.mark.parametrize("e, expected", [
    (-1.0, 1.0),   # env open → target 1 (open)
    (1.0, 0.0),    # env close → target 0 (close)
    (0.0, 1.0),    # clipped to [0, 1] first, then 1 − x
    (0.25, 0.75),
    (2.0, 0.0),
])
def test_env_to_model_gripper(e, expected):
    assert env_to_model_gripper(e) == pytest.approx(expected)


def test_gripper_round_trip_on_env_commands():
    for e in (-1.0, 1.0):
        assert model_to_env_gripper(env_to_model_gripper(e)) == e


def test_axis_angle_identity_is_zero():
    np.testing.assert_array_equal(quat_xyzw_to_axis_angle([0, 0, 0, 1]), np.zeros(3))


def test_axis_angle_half_turn_about_x():
    # LIBERO's start pose, gripper pointing down: π about x, xyzw = (1, 0, 0, 0).
    np.testing.assert_allclose(quat_xyzw_to_axis_angle([1, 0, 0, 0]), [math.pi, 0, 0], atol=1e-12)


def test_axis_angle_quarter_turn_about_z():
    s = math.sqrt(0.5)  # 90° about z: (0, 0, sin 45°, cos 45°)
    np.testing.assert_allclose(quat_xyzw_to_axis_angle([0, 0, s, s]), [0, 0, math.pi / 2], atol=1e-12)


def test_axis_angle_keeps_robosuite_sign_convention():
    # (0, 0, sin45°, −cos45°) is −90° about z, but robosuite does not take the short way round:
    # angle 2·acos(−cos45°) = 3π/2 about the axis (0, 0, sin45°)/sin(3π/4) = +z.
    s = math.sqrt(0.5)
    np.testing.assert_allclose(quat_xyzw_to_axis_angle([0, 0, s, -s]), [0, 0, 1.5 * math.pi], atol=1e-12)


def test_axis_angle_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        quat_xyzw_to_axis_angle([0, 0, 1])


def test_matrix_of_half_turn_about_x():
    np.testing.assert_allclose(quat_xyzw_to_matrix([1, 0, 0, 0]), np.diag([1.0, -1.0, -1.0]), atol=1e-12)


def test_matrix_of_quarter_turn_about_z():
    s = math.sqrt(0.5)
    np.testing.assert_allclose(quat_xyzw_to_matrix([0, 0, s, s]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
