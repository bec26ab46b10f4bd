"""SimRunner (commands → env steps, episode end, expert teleop) and evaluation summaries, on a fake env."""

from types import SimpleNamespace

import numpy as np
import pytest

from bitvla_ros.sim.evaluation import format_summary, summarize, wilson_interval
from bitvla_ros.sim.runner import SimRunner, env_to_model_action, model_to_env_action


class FakeEnv:
    instruction, max_steps = "put the bowl on the stove", 5

    def __init__(self, task_id, solve_at=None):
        self.task_id, self.solve_at, self.actions, self.closed = task_id, solve_at, [], False

    def reset(self, init_state):
        self.actions.clear()
        return SimpleNamespace(init=init_state, gripper_qpos=np.array([0.04, -0.04]))

    def step(self, action):
        self.actions.append(np.asarray(action))
        return SimpleNamespace(step=len(self.actions)), self.solve_at == len(self.actions)

    def close(self):
        self.closed = True


def test_gripper_conventions_on_whole_actions():
    assert model_to_env_action([0.1, 0, 0, 0, 0, 0, 0.9]).tolist() == [0.1, 0, 0, 0, 0, 0, -1.0]  # 1 = open → −1
    assert model_to_env_action([0, 0, 0, 0, 0, 0, 0.2])[6] == 1.0
    assert env_to_model_action([0, 0, 0, 0, 0, 0, -1.0])[6] == 1.0
    assert env_to_model_action([0, 0, 0, 0, 0, 0, 1.0])[6] == 0.0
    with pytest.raises(ValueError, match="7-D"):
        model_to_env_action([0.0] * 6)


def test_chunks_replace_the_queue_and_the_episode_ends_at_max_steps():
    envs = []
    r = SimRunner(lambda task: envs.append(FakeEnv(task)) or envs[-1])
    r.reset(1, init_state=3)
    assert r.info.init_state == 3 and not r.has_action() and r.step_once() is None
    r.command_chunk([[0.1 * i, 0, 0, 0, 0, 0, 1.0] for i in range(8)])
    r.step_once()
    r.command_chunk([[9, 0, 0, 0, 0, 0, 0.0]] * 2)  # a new plan replaces the rest of the old one
    results = [r.step_once() for _ in range(3)]
    assert [a[0] for a in envs[0].actions] == [0.0, 9.0, 9.0]
    assert envs[0].actions[1][6] == 1.0  # model 0 → env close
    assert results[-1] is None  # the queue ran dry
    r.command_action([0, 0, 0, 0, 0, 0, 1.0])
    r.command_action([0, 0, 0, 0, 0, 0, 1.0])
    assert not r.step_once().done and r.step_once().done  # step 5 of 5
    assert r.info.reason == "max_steps" and not r.active
    r.reset(2, 0)
    assert len(envs) == 2 and envs[0].closed  # a new task builds a new env


def test_success_ends_the_episode_and_hold_keeps_time_running():
    r = SimRunner(lambda task: FakeEnv(task, solve_at=2))
    r.reset(1, 0)
    assert not r.step_once(hold=True).done  # nothing queued: hold still, gripper open
    result = r.step_once(hold=True)
    assert result.success and result.done and r.info.reason == "success"
    assert r.env.actions[0].tolist() == [0, 0, 0, 0, 0, 0, -1.0]


def test_an_expert_waits_for_start_and_its_actions_go_out_in_model_convention():
    class Expert:
        def __init__(self, env):
            self.resets = 0

        def reset(self):
            self.resets += 1

        def act(self, obs):
            return np.array([0.5, 0, 0, 0, 0, 0, 1.0])  # close, env convention

    r = SimRunner(lambda task: FakeEnv(task), expert_factory=Expert)
    r.reset(1, 0)
    assert r.paused and not r.has_action() and r.step_once() is None
    r.paused = False
    result = r.step_once()
    assert result.teleop.tolist() == [0.5, 0, 0, 0, 0, 0, 0.0]  # close → 0 for the dataset
    assert r.expert.resets == 1


def test_awaiting_command_only_while_an_uncommanded_episode_runs():
    r = SimRunner(lambda task: FakeEnv(task))
    assert not r.awaiting_command  # no episode yet
    r.reset(1, 0)
    assert r.awaiting_command  # the sim's observation is out; the next step needs a command
    r.command_chunk([[0, 0, 0, 0, 0, 0, 1.0]] * 5)
    assert not r.awaiting_command
    while r.step_once() is not None and r.active:
        pass
    assert not r.active and not r.awaiting_command  # over after max_steps: nothing to answer
    expert_runner = SimRunner(lambda task: FakeEnv(task), expert_factory=lambda env: SimpleNamespace(
        reset=lambda: None, act=lambda obs: np.zeros(7)))
    expert_runner.reset(1, 0)
    expert_runner.paused = False
    assert not expert_runner.awaiting_command  # the expert answers itself


def test_wilson_interval_and_summary():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    eps = [{"instruction": "a", "success": True, "steps": 100}, {"instruction": "a", "success": False, "steps": 300},
           {"instruction": "b", "success": True, "steps": 120}]
    rows = summarize(eps)
    assert rows["a"]["successes"] == 1 and rows["a"]["mean_steps_success"] == 100
    assert rows["all tasks"]["trials"] == 3 and rows["all tasks"]["rate"] == pytest.approx(2 / 3)
    assert "all tasks" in format_summary(rows)
