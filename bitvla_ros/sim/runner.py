"""Stepping the simulation from commands (or the scripted expert), without ROS.

Commands arrive in the model's convention (gripper 1 = open, 0 = close) as a chunk (a trajectory
replaces what is left of the previous one, as joint_trajectory_controller does) or one action at a
time (a stream). `step_once` executes the next one in the env's convention and says whether the
episode is over: solved (the env's done flag) or out of steps. With an expert, the expert acts
instead, and its action is returned in the model's convention for the teleop topic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bitvla_ros.sim.gripper import env_to_model_gripper, model_to_env_gripper

# What the simulated robot publishes and takes, by name (sim_node's topics, the policy's settings).
CAMERA_NAMES = ["agentview", "wrist"]
PROPRIO_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "finger_left", "finger_right"]
ACTION_NAMES = ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]


def model_to_env_action(action) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64).copy()
    if a.shape != (7,):
        raise ValueError(f"expected a 7-D delta-EEF action (dx dy dz dax day daz gripper), got shape {a.shape}")
    a[6] = model_to_env_gripper(a[6])
    return a


def env_to_model_action(action) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64).copy()
    a[6] = env_to_model_gripper(a[6])
    return a


@dataclass(frozen=True)
class StepResult:
    observation: object
    step: int
    success: bool
    done: bool
    teleop: np.ndarray | None  # the expert's action in model convention, when an expert drives


@dataclass
class EpisodeInfo:
    episode: int
    task_id: int
    init_state: int
    instruction: str
    step: int = 0
    success: bool = False
    done: bool = False

    @property
    def reason(self) -> str:
        return "success" if self.success else ("max_steps" if self.done else "running")


class SimRunner:
    def __init__(self, make_env: Callable[[int], object], expert_factory: Callable[[object], object] | None = None,
                 max_steps: int = 0):
        self.make_env, self.expert_factory, self.max_steps_override = make_env, expert_factory, max_steps
        self.env, self.task_id, self.expert = None, None, None
        self.queue: deque[np.ndarray] = deque()
        self.observation = None
        self.info: EpisodeInfo | None = None
        self._episodes = 0
        self._gripper = -1.0
        self.paused = False

    @property
    def max_steps(self) -> int:
        return self.max_steps_override or self.env.max_steps

    def reset(self, task_id: int, init_state: int):
        if self.env is None or task_id != self.task_id:
            if self.env is not None:
                self.env.close()
            self.env, self.task_id = self.make_env(task_id), task_id
        self.queue.clear()
        self._gripper = -1.0  # open, as the settle steps leave it
        self.observation = self.env.reset(init_state)
        self.expert = self.expert_factory(self.env) if self.expert_factory else None
        if self.expert is not None:
            self.expert.reset()
        self._episodes += 1
        self.info = EpisodeInfo(self._episodes, task_id, init_state, self.env.instruction)
        # An expert waits for `start` so that a recorder can begin the episode first.
        self.paused = self.expert is not None
        return self.observation

    def command_chunk(self, actions) -> None:
        self.queue = deque(np.asarray(a, dtype=np.float64) for a in actions)

    def command_action(self, action) -> None:
        self.queue.append(np.asarray(action, dtype=np.float64))

    @property
    def active(self) -> bool:
        return self.info is not None and not self.info.done

    def has_action(self) -> bool:
        return self.active and not self.paused and (self.expert is not None or bool(self.queue))

    @property
    def awaiting_command(self) -> bool:
        """The episode runs and the next step needs a command from outside (no expert, empty queue):
        whoever commands must have seen the current observation."""
        return self.active and not self.paused and self.expert is None and not self.queue

    def step_once(self, hold: bool = False) -> StepResult | None:
        """Execute the next action. Without one: None, or with ``hold`` a step that keeps the arm
        still and the gripper as it is (real time does not wait)."""
        if not self.active or self.paused:
            return None
        teleop = None
        if self.expert is not None:
            env_action = np.asarray(self.expert.act(self.observation), dtype=np.float64)
            teleop = env_to_model_action(env_action)
        elif self.queue:
            env_action = model_to_env_action(self.queue.popleft())
        elif hold:
            env_action = np.array([0, 0, 0, 0, 0, 0, self._gripper])
        else:
            return None
        self._gripper = float(env_action[6])
        self.observation, success = self.env.step(env_action)
        info = self.info
        info.step += 1
        info.success = bool(success)
        info.done = info.success or info.step >= self.max_steps
        return StepResult(self.observation, info.step, info.success, info.done, teleop)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
