"""The policy node's pure-Python core: observations, scheduling, safety, swaps (no rclpy)."""

import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from bitvla_ros.policy.observation import ObservationBuffer
from bitvla_ros.policy.rejections import Rejected, RejectionLog
from bitvla_ros.policy.runner import STREAM, TRAJECTORY, PolicyRunner, PolicySettings
from bitvla_ros.policy.safety import SafetyFilter, SafetyLimits
from bitvla_ros.policy.scheduler import ChunkScheduler

CAMS, JOINTS = ["agentview", "wrist"], ["j1", "j2"]
IMG = np.zeros((4, 4, 3), np.uint8)


class FakePredictor:
    """Returns chunks whose values count up, so tests can tell chunks and steps apart."""

    def __init__(self, chunk=8, dim=3, images=2, proprio=2, fail=False):
        self.model = SimpleNamespace(config=SimpleNamespace(action_dim=dim, num_images=images, use_proprio=True,
                                                            proprio_dim=proprio), backend_name="fake")
        self.calls, self.chunk, self.dim, self.fail = [], chunk, dim, fail
        self.gate = None  # a threading.Event to hold predict() open

    def predict(self, images, instruction, proprio):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("boom")
        self.calls.append((len(images), instruction, proprio.copy()))
        n = len(self.calls)
        actions = n * 100 + np.arange(self.chunk)[:, None] + np.zeros((self.chunk, self.dim))
        return SimpleNamespace(actions=actions, inference_s=0.01 * n)


def settings(**kw):
    base = dict(camera_names=CAMS, proprio_names=JOINTS, action_names=["a", "b", "c"], max_observation_age_s=1.0,
                start_enabled=True)
    return PolicySettings(**(base | kw))


def feed(runner, now, instruction="pick the bowl"):
    for c in CAMS:
        runner.observations.put_image(c, IMG, now)
    runner.observations.put_joint_state(JOINTS, [0.1, 0.2], now)
    if instruction:
        runner.set_instruction(instruction)


# --- observations ------------------------------------------------------------------------------

def test_snapshot_requires_every_input_and_freshness():
    buf = ObservationBuffer(CAMS, JOINTS, max_age_s=0.5)
    with pytest.raises(Rejected, match="missing_camera"):
        buf.snapshot(0.0)
    buf.put_image("agentview", IMG, 10.0)
    buf.put_image("wrist", IMG, 10.2)
    with pytest.raises(Rejected, match="missing_proprio"):
        buf.snapshot(10.3)
    buf.put_joint_state(["j1", "other", "j2"], [1.0, 5.0, 2.0], 10.1)  # extra joints are ignored
    with pytest.raises(Rejected, match="no_instruction"):
        buf.snapshot(10.3)
    buf.set_instruction("  Pick the bowl ")
    obs = buf.snapshot(10.3)
    assert obs.proprio.tolist() == [1.0, 2.0] and obs.instruction == "Pick the bowl"
    assert obs.stamp == 10.0  # as old as its oldest part
    with pytest.raises(Rejected, match="stale"):
        buf.snapshot(10.6)


@pytest.mark.parametrize("names,positions,cause", [
    (["x", "y"], [1.0, 2.0], "unknown_joints"),
    (["j1", "j2"], [1.0, math.nan], "non_finite_proprio"),
    (["j1", "j2"], [math.inf, 1.0], "non_finite_proprio"),
    (["j1", "j2"], [1.0], "size_mismatch"),
])
def test_bad_joint_states_are_refused(names, positions, cause):
    buf = ObservationBuffer(CAMS, JOINTS, 1.0)
    with pytest.raises(Rejected) as e:
        buf.put_joint_state(names, positions, 0.0)
    assert e.value.cause == cause


def test_bad_instructions_are_refused():
    buf = ObservationBuffer(CAMS, JOINTS, 1.0)
    for text in ["", "   ", "x" * 10_000]:
        with pytest.raises(Rejected, match="bad_instruction"):
            buf.set_instruction(text)
    assert buf.set_instruction("go") and not buf.set_instruction("go")


def test_complete_at_finds_every_part_of_one_stamp_in_the_history():
    buf = ObservationBuffer(CAMS, JOINTS, 1.0, history=2)  # no instruction needed: not stamped
    for t in (1.0, 2.0):
        for c in CAMS:
            buf.put_image(c, np.full((4, 4, 3), int(t), np.uint8), t)
    assert buf.complete_at(1.0) is None  # no joints yet
    buf.put_joint_state(JOINTS, [1.0] * len(JOINTS), 1.0)
    obs = buf.complete_at(1.0)
    assert obs.stamp == 1.0 and all(img[0, 0, 0] == 1 for img in obs.images)  # not the newer images
    for t in (3.0, 4.0):
        buf.put_image(CAMS[0], np.zeros((4, 4, 3), np.uint8), t)
    assert buf.complete_at(1.0) is None  # fell out of a history of 2
    with pytest.raises(ValueError, match="history"):
        ObservationBuffer(CAMS, JOINTS, 1.0).complete_at(1.0)


def test_rejection_log_rate_limits_per_cause():
    log = RejectionLog(interval_s=5.0)
    r = Rejected("stale", "old")
    assert log.record(r, 0.0) and not log.record(r, 1.0) and log.record(r, 5.0)
    assert log.record(Rejected("missing_camera", ""), 1.0)
    assert log.snapshot() == {"stale": 3, "missing_camera": 1}


# --- scheduler and safety ----------------------------------------------------------------------

def test_scheduler_executes_then_replans_and_prefetches():
    s = ChunkScheduler(execute_steps=3, prefetch_steps=1)
    assert s.needs_inference()
    s.start_inference()
    assert not s.needs_inference()
    s.load(np.arange(8)[:, None], stamp=1.0)
    assert [s.pop().index for _ in range(2)] == [0, 1]
    assert s.needs_inference()  # one action left = prefetch threshold
    s.flush()
    assert len(s) == 0 and s.needs_inference()


def test_safety_clamps_bounds_and_step_delta():
    f = SafetyFilter(SafetyLimits.build(2, lower=[-1, -1], upper=[1, 1], max_delta=[0.5]))
    assert f.apply([5.0, 0.0]).tolist() == [1.0, 0.0]
    assert f.apply([-1.0, 0.2]).tolist() == [0.5, 0.2]  # at most 0.5 from the previous command
    with pytest.raises(Rejected, match="non_finite_action"):
        f.apply([math.nan, 0.0])
    with pytest.raises(ValueError, match="expected 1 or 2"):
        SafetyLimits.build(2, lower=[0, 0, 0])


# --- the runner --------------------------------------------------------------------------------

def test_disabled_runner_never_commands():
    r = PolicyRunner(settings(start_enabled=False), FakePredictor())
    feed(r, 0.0)
    assert r.infer_once(0.1) is None and r.tick(0.1) is None
    assert r.predictor.calls == []


def test_trajectory_output_publishes_the_executed_plan_then_replans():
    p = FakePredictor()
    r = PolicyRunner(settings(execute_steps=4, upper=[103.0]), p)
    feed(r, 0.0)
    cmd = r.infer_once(0.1)
    assert cmd.actions.shape == (4, 3) and cmd.stamp == 0.0
    assert cmd.actions[:, 0].tolist() == [100, 101, 102, 103]
    assert r.infer_once(0.1) is None  # queue still full
    for _ in range(4):
        assert r.tick(0.2) is None  # trajectory mode: ticks only advance the queue
    feed(r, 0.3, instruction=None)
    cmd2 = r.infer_once(0.3)
    assert cmd2.actions[0, 0] == 103.0  # clamped by the upper limit
    assert r.status()["chunks_published"] == 2


def test_stream_output_sends_one_safe_action_per_tick():
    r = PolicyRunner(settings(command_type=STREAM, max_step_delta=[0.5]), FakePredictor(chunk=8))
    feed(r, 0.0)
    assert r.infer_once(0.1) is None
    sent = [r.tick(0.1 + i * 0.05).actions[0, 0] for i in range(8)]
    assert sent == [100.0] + [100.5 + 0.5 * i for i in range(7)][:7]  # first free, then ≤ 0.5 a step
    assert r.tick(0.6) is None


def test_stale_or_incomplete_observations_are_counted_not_used(monkeypatch):
    logged = []
    r = PolicyRunner(settings(), FakePredictor(), log=logged.append)
    assert r.infer_once(0.0) is None
    feed(r, 0.0)
    assert r.infer_once(5.0) is None  # stale
    assert r.status()["rejected"] == {"missing_camera": 1, "stale": 1}
    assert len(logged) == 2 and r.predictor.calls == []


def test_new_instruction_flushes_queue_and_drops_a_chunk_in_flight():
    p = FakePredictor()
    r = PolicyRunner(settings(command_type=STREAM), p)
    feed(r, 0.0)
    r.infer_once(0.1)
    r.tick(0.1)
    assert r.set_instruction("open the drawer")
    assert len(r.scheduler) == 0
    # an inference that finishes after the instruction changed is dropped
    p.gate = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("cmd", r.infer_once(0.2)))
    t.start()
    r.set_instruction("close the drawer")
    p.gate.set()
    t.join(5)
    assert out["cmd"] is None and len(r.scheduler) == 0


def test_predictor_failure_faults_until_reset():
    logged = []
    r = PolicyRunner(settings(), FakePredictor(fail=True), log=logged.append)
    feed(r, 0.0)
    assert r.infer_once(0.1) is None
    assert "inference failed" in r.status()["fault"] and logged
    r.predictor.fail = False
    assert r.infer_once(0.1) is None  # still faulted
    r.reset()
    assert r.infer_once(0.1) is not None


def test_swap_happens_between_chunks_and_bad_swaps_keep_the_old_policy():
    old, new = FakePredictor(), FakePredictor()
    r = PolicyRunner(settings(command_type=STREAM), old)
    feed(r, 0.0)
    r.infer_once(0.1)
    r.stage(new)
    assert r.predictor is old  # the running chunk finishes with the old policy
    for _ in range(8):
        r.tick(0.1)
    r.infer_once(0.2)
    assert r.predictor is new and len(new.calls) == 1
    with pytest.raises(ValueError, match="4 action dims"):
        r.stage(FakePredictor(dim=4))
    assert r.predictor is new


def test_disable_flushes_and_optionally_holds():
    r = PolicyRunner(settings(command_type=STREAM, hold_command="last"), FakePredictor())
    feed(r, 0.0)
    r.infer_once(0.1)
    last = r.tick(0.1).actions[0]
    hold = r.set_enabled(False)
    assert hold.hold and np.array_equal(hold.actions[0], last)
    assert len(r.scheduler) == 0 and r.tick(0.2) is None
    r2 = PolicyRunner(settings(hold_command="zero"), FakePredictor())
    assert r2.set_enabled(False).actions.tolist() == [[0.0, 0.0, 0.0]]
    assert PolicyRunner(settings(), FakePredictor()).set_enabled(False) is None


def test_model_and_settings_must_agree():
    with pytest.raises(ValueError, match="takes 2 images but 1 cameras"):
        PolicyRunner(settings(camera_names=["only"]), FakePredictor())
    with pytest.raises(ValueError, match="command_type"):
        PolicyRunner(settings(command_type="twist"))
