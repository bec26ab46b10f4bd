"""DART-style recording: the arm executes the expert's action plus noise, the label is the clean action.
On a fake env here; test_sim_libero.py runs the expert under noise in LIBERO."""

from types import SimpleNamespace

import numpy as np
import pytest

from bitvla_ros.sim.dart import NoisyExecution
from bitvla_ros.sim.runner import SimRunner, env_to_model_action

CLEAN = np.array([0.3, -0.2, 0.95, 0.0, 0.1, -0.1, 1.0])  # env convention, gripper closing


class FakeEnv:
    instruction, max_steps, seed = "put the bowl on the stove", 1000, 1

    def __init__(self):
        self.executed = []

    def reset(self, init_state):
        self.executed.clear()
        return SimpleNamespace(init=init_state)

    def step(self, action):
        self.executed.append(np.asarray(action))
        return SimpleNamespace(step=len(self.executed)), False

    def close(self):
        pass


class ConstantExpert:
    def __init__(self, env):
        self.env = env

    def reset(self):
        pass

    def act(self, obs):
        return CLEAN.copy()


def run(sigma, noise_seed=0, init=3, steps=40, correlation=0.0):
    env = FakeEnv()
    runner = SimRunner(lambda task: NoisyExecution(env, sigma, correlation, noise_seed), ConstantExpert)
    runner.reset(1, init)
    runner.paused = False
    labels = [runner.step_once().teleop for _ in range(steps)]
    return np.array(labels), np.array(env.executed), runner


def test_the_label_is_the_clean_action_and_the_arm_executes_it_plus_noise():
    labels, executed, runner = run(sigma=0.1)
    np.testing.assert_array_equal(labels, np.tile(env_to_model_action(CLEAN), (40, 1)))  # teleop: clean
    noise = executed[:, :6] - CLEAN[:6]
    assert np.all(np.abs(executed[:, :6]) <= 1.0)
    np.testing.assert_array_equal(executed[:, 6], CLEAN[6])  # the gripper is never perturbed
    unclipped = noise[:, [0, 1, 3, 4, 5]]  # dz sits at 0.95: its noise is cut at the +1 limit
    assert 0.05 < unclipped.std() < 0.2 and abs(unclipped.mean()) < 0.05
    assert np.all(executed[:, 2] <= 1.0) and executed[:, 2].max() == 1.0
    assert np.any(np.abs(noise) > 1e-3, axis=1).all()  # every step differs from the label
    np.testing.assert_array_equal(runner.env.last_executed, executed[-1])


def test_noise_is_seeded_per_episode_and_zero_sigma_is_clean():
    _, a, _ = run(0.1, noise_seed=0, init=3)
    _, b, _ = run(0.1, noise_seed=0, init=3)
    _, c, _ = run(0.1, noise_seed=1, init=3)
    _, d, _ = run(0.1, noise_seed=0, init=4)
    np.testing.assert_array_equal(a, b)  # reproducible
    assert not np.allclose(a, c) and not np.allclose(a, d)  # another repeat or state: other noise
    _, clean, _ = run(0.0)
    np.testing.assert_array_equal(clean, np.tile(CLEAN, (40, 1)))


def test_correlated_noise_drifts_slowly():
    _, white, _ = run(0.1, correlation=0.0, steps=400)
    _, slow, _ = run(0.1, correlation=0.9, steps=400)

    def lag1(x):
        x = x[:, 0] - CLEAN[0]
        return np.corrcoef(x[:-1], x[1:])[0, 1]

    assert abs(lag1(white)) < 0.2 and lag1(slow) > 0.7
    with pytest.raises(ValueError, match="correlation"):
        NoisyExecution(FakeEnv(), 0.1, correlation=1.0)
