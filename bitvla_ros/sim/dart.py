"""Recovery demonstrations, DART-style: noise on the actions the expert's arm executes, not on its labels.

A policy trained on clean demonstrations only ever sees states on the expert's path; its own small
errors take it off that path, where it has no data, and they compound (the eval's failures run to the
step limit). DART (Laskey et al., 2017, "DART: Noise Injection for Robust Imitation Learning") records
the expert under noise instead: the executed action is the expert's plus Gaussian noise, the state
drifts off the clean path, and the expert, a closed-loop controller that reads the sim every step,
steers back. The recorded label is the expert's clean action at the perturbed state, i.e. a recovery.

`NoisyExecution` wraps a `LiberoEnv`: `step()` adds the noise to the arm dims (position and rotation
deltas, in the env's ±1 action units: ±1 = ±5 cm, ±0.5 rad per step) and clips to ±1; the gripper
is left alone (flipping it would drop the object, which is not a recovery to imitate). Whoever calls
`step()` keeps the clean action as the label: sim_node publishes the expert's action on the teleop
topic before the wrapper perturbs it. The noise is AR(1) in time with stationary std `sigma`
(`correlation` 0 = independent per step, the DART paper's setting; closer to 1 = slower drifts that
the 20 Hz controller does not average out). Every episode's noise is seeded from (noise seed, env
seed, init state), so a recording is reproducible and does not depend on episode order.
"""

from __future__ import annotations

import numpy as np

ARM_DIMS = 6  # dx dy dz dax day daz; the 7th (gripper) is not perturbed


class NoisyExecution:
    def __init__(self, env, sigma: float, correlation: float = 0.0, noise_seed: int = 0):
        if sigma < 0 or not 0 <= correlation < 1:
            raise ValueError(f"expected noise sigma >= 0 and correlation in [0, 1), got {sigma} and {correlation}")
        self._env, self.sigma, self.correlation = env, float(sigma), float(correlation)
        self.noise_seed = noise_seed     # may change between episodes (repeats of one init state)
        self._rng = np.random.default_rng(0)
        self._noise = np.zeros(ARM_DIMS)
        self.last_executed: np.ndarray | None = None

    def __getattr__(self, name):  # everything else is the env's (domain, sim, max_steps, seed, ...)
        return getattr(self._env, name)

    def reset(self, init_state: int):
        self._rng = np.random.default_rng([self.noise_seed, self._env.seed, init_state])
        self._noise = self._rng.normal(0.0, self.sigma, ARM_DIMS)  # drawn from the stationary distribution
        self.last_executed = None
        return self._env.reset(init_state)

    def perturb(self, action) -> np.ndarray:
        """The action the arm executes for the expert's `action`; advances the noise by one step."""
        a = np.array(action, dtype=np.float64)
        rho = self.correlation
        self._noise = rho * self._noise + np.sqrt(1 - rho * rho) * self._rng.normal(0.0, self.sigma, ARM_DIMS)
        a[:ARM_DIMS] = np.clip(a[:ARM_DIMS] + self._noise, -1.0, 1.0)
        return a

    def step(self, env_action):
        self.last_executed = self.perturb(env_action)
        return self._env.step(self.last_executed)

    def close(self) -> None:
        self._env.close()
