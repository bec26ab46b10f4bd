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
from bitvla_ros.policy.timing import first_live, trajectory_timing
from jtc import TrajectoryController

CAMS, JOINTS = ["agentview", "wrist"], ["j1", "j2"]
IMG = np.zeros((4, 4, 3), np.uint8)


class FakePredictor:
    """Returns chunks whose values count up, so tests can tell chunks and steps apart."""

    def __init__(self, chunk=8, dim=3, images=2, proprio=2, fail=False, nan=False):
        self.model = SimpleNamespace(config=SimpleNamespace(action_dim=dim, num_images=images, use_proprio=True,
                                                            proprio_dim=proprio), backend_name="fake")
        self.calls, self.chunk, self.dim, self.fail, self.nan = [], chunk, dim, fail, nan
        self.gate = None  # a threading.Event to hold predict() open

    def predict(self, images, instruction, proprio):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("boom")
        self.calls.append((len(images), instruction, proprio.copy()))
        n = len(self.calls)
        actions = n * 100 + np.arange(self.chunk)[:, None] + np.zeros((self.chunk, self.dim))
        if self.nan:
            actions[3, 1] = math.nan
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


# --- timing, scheduler and safety ---------------------------------------------------------------

P = 0.05  # control period of the tests (20 Hz)


def test_actions_whose_slot_ended_are_past():
    assert first_live(1.0, 1.0, P) == 0
    assert first_live(1.0, 1.049, P) == 0   # the first slot is still running
    assert first_live(1.0, 1.05, P) == 1
    assert first_live(1.0, 1.17, P) == 3
    assert first_live(1.0, 0.9, P) == 0     # a clock behind the stamp: nothing is past


@pytest.mark.parametrize("mode", ["zero", "now", "observation"])
def test_trajectory_points_lie_ahead_of_the_present_in_every_stamp_mode(mode):
    dues = 1.0 + np.arange(2, 8) * P       # a chunk from t=1.0 whose first two slots ended
    t = trajectory_timing(dues, 1.0, now=1.12, period=P, stamp_mode=mode)
    start = {"zero": 1.12, "now": 1.12, "observation": 1.0}[mode]
    assert t.stamp == {"zero": 0.0, "now": 1.12, "observation": 1.0}[mode]
    absolute = start + np.array(t.time_from_start)
    assert absolute == pytest.approx(dues + P)  # the same instants, whatever the reference
    assert (absolute > 1.12).all()
    with pytest.raises(ValueError, match="stamp_mode must be one of"):
        trajectory_timing(dues, 1.0, 1.12, P, "later")


def test_scheduler_replans_on_a_nominal_schedule_and_prefetches():
    s = ChunkScheduler(P, execute_steps=4, prefetch_steps=1)
    identity = lambda plan, previous: plan  # noqa: E731
    assert s.needs_inference(0.0)
    s.start_inference()
    assert not s.needs_inference(0.0)
    queued = s.load(np.arange(8)[:, None], stamp=1.0, now=1.01, make_safe=identity)
    assert [q.index for q in queued] == [0, 1, 2, 3] and queued[1].due == pytest.approx(1.05)
    assert s.replan_at == pytest.approx(1.15)   # (execute - prefetch) periods after the observation
    assert not s.needs_inference(1.14) and s.needs_inference(1.15)
    # the next observation came 20 ms late (a camera frame): the schedule does not drift
    s.load(np.arange(8)[:, None], stamp=1.17, now=1.18, make_safe=identity)
    assert s.replan_at == pytest.approx(1.30)
    # a schedule that fell far behind is anchored again on the observation
    s.load(np.arange(8)[:, None], stamp=2.0, now=2.01, make_safe=identity)
    assert s.replan_at == pytest.approx(2.15)
    s.flush()
    assert len(s) == 0 and s.needs_inference(2.02)


def test_a_late_chunk_starts_at_its_first_live_action_and_a_dead_one_is_dropped():
    s = ChunkScheduler(P, execute_steps=4)
    identity = lambda plan, previous: plan  # noqa: E731
    queued = s.load(np.arange(8)[:, None], stamp=1.0, now=1.12, make_safe=identity)  # 120 ms late
    assert [q.index for q in queued] == [2, 3]
    # later than the whole execute window: the next live action still runs, then re-plan at once
    queued = s.load(np.arange(8)[:, None], stamp=2.0, now=2.27, make_safe=identity)
    assert [q.index for q in queued] == [5]
    assert s.load(np.arange(8)[:, None], stamp=3.0, now=3.5, make_safe=identity) == []
    assert s.needs_inference(3.5)


def test_stream_pops_the_action_of_the_current_slot():
    s = ChunkScheduler(P, execute_steps=8)
    s.load(np.arange(8)[:, None], stamp=1.0, now=1.0, make_safe=lambda plan, previous: plan)
    assert s.pop(1.002).index == 0
    assert s.pop(1.049).index == 1          # ticks a little early or late: no repeat, no skip
    assert s.pop(1.101).index == 2
    assert s.pop(1.26).index == 5           # a tick 100 ms late sends the present, not the past
    assert s.dropped_late == 0 and s.pop(1.27) is None


def test_blend_fades_into_the_new_plan_but_never_blends_the_gripper():
    s = ChunkScheduler(P, execute_steps=8, prefetch_steps=4, join="blend", blend_steps=3, frozen_dims=[1])
    identity = lambda plan, previous: plan  # noqa: E731
    s.load(np.zeros((8, 2)), stamp=1.0, now=1.0, make_safe=identity)
    s.advance(1.2)
    new = s.load(np.ones((8, 2)), stamp=1.2, now=1.2, make_safe=identity)
    arm, gripper = [q.action[0] for q in new], [q.action[1] for q in new]
    assert arm[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and arm[4:] == [1.0] * 4
    assert gripper == [1.0] * 8
    replace = ChunkScheduler(P, execute_steps=8, prefetch_steps=4)
    replace.load(np.zeros((8, 2)), stamp=1.0, now=1.0, make_safe=identity)
    assert [q.action[0] for q in replace.load(np.ones((8, 2)), 1.2, 1.2, identity)] == [1.0] * 8


def test_safety_clamps_bounds_and_step_delta():
    f = SafetyFilter(SafetyLimits.build(2, lower=[-1, -1], upper=[1, 1], max_delta=[0.5]))
    assert f.apply([5.0, 0.0], None).tolist() == [1.0, 0.0]
    assert f.apply([-1.0, 0.2], np.array([1.0, 0.0])).tolist() == [0.5, 0.2]  # at most 0.5 from the previous
    assert f.apply_plan(np.array([[-1.0, 0.0], [-1.0, 0.0]]), np.array([1.0, 0.0]))[:, 0].tolist() == [0.5, 0.0]
    with pytest.raises(Rejected, match="non_finite_action"):
        f.apply([math.nan, 0.0], None)
    with pytest.raises(ValueError, match="expected 1 or 2"):
        SafetyLimits.build(2, lower=[0, 0, 0])


# --- the runner --------------------------------------------------------------------------------

def test_disabled_runner_never_commands():
    r = PolicyRunner(settings(start_enabled=False), FakePredictor())
    feed(r, 0.0)
    assert r.infer_once(0.1) is None and r.tick(0.1) is None
    assert r.predictor.calls == []


def test_trajectory_output_publishes_the_live_plan_then_replans():
    p = FakePredictor()
    r = PolicyRunner(settings(execute_steps=4, upper=[103.0]), p)
    feed(r, 0.0)
    cmd = r.infer_once(0.02)
    assert cmd.actions.shape == (4, 3) and cmd.stamp == 0.0
    assert cmd.actions[:, 0].tolist() == [100, 101, 102, 103]
    assert cmd.due.tolist() == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert r.infer_once(0.1) is None  # not due before 4 periods
    for k in range(4):
        assert r.tick(0.05 * k) is None  # trajectory mode: ticks only advance the queue
    feed(r, 0.2, instruction=None)
    cmd2 = r.infer_once(0.2)
    assert cmd2.actions[0, 0] == 103.0  # clamped by the upper limit
    assert r.status()["chunks_published"] == 2


def test_the_next_chunk_waits_for_the_frame_taken_at_the_replan_time():
    p = FakePredictor()
    r = PolicyRunner(settings(execute_steps=4), p)
    feed(r, 0.0)
    r.infer_once(0.0)
    feed(r, 0.19, instruction=None)          # the newest frame predates the re-plan time (0.2)
    assert r.infer_once(0.21) is None and len(p.calls) == 1
    feed(r, 0.22, instruction=None)
    assert r.infer_once(0.22) is not None and len(p.calls) == 2
    feed(r, 0.30, instruction=None)          # no fresher frame within a period: the latest is used
    assert r.infer_once(0.46) is not None and len(p.calls) == 3


def test_stream_output_sends_one_safe_action_per_tick_from_the_present():
    clock = {"t": 0.1}
    r = PolicyRunner(settings(command_type=STREAM, max_step_delta=[0.5]), FakePredictor(chunk=8),
                     clock=lambda: clock["t"])
    feed(r, 0.0)
    assert r.infer_once(0.0) is None   # the chunk comes back 100 ms after its observation
    sent = [r.tick(0.1 + i * 0.05).actions[0, 0] for i in range(6)]
    assert sent == [102.0, 102.5, 103.0, 103.5, 104.0, 104.5]  # the past is skipped; then ≤ 0.5 a step
    assert r.tick(0.41) is None


@pytest.mark.parametrize("latency_periods", [0, 0.6, 1.5, 3.2])
@pytest.mark.parametrize("stamp_mode", ["zero", "now", "observation"])
@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_trajectory_controller_executes_every_chunk(latency_periods, stamp_mode, prefetch):
    """The runner against joint_trajectory_controller's rules, at end-to-end latencies up to a few
    control periods: nothing rejected, no point sent in the past."""
    clock = {"t": 0.0}
    r = PolicyRunner(settings(execute_steps=6, prefetch_steps=prefetch, stamp_mode=stamp_mode),
                     FakePredictor(chunk=8), clock=lambda: clock["t"])
    jtc = TrajectoryController(dim=3)
    latency = latency_periods * P
    t, sent = 0.0, 0
    while t < 3.0:
        feed(r, t, instruction="pick the bowl")   # a camera at the control rate
        r.tick(t)
        if r.inference_due(t):
            clock["t"] = t + latency
            cmd = r.infer_once(t)
            if cmd is not None:
                timing = r.trajectory(cmd, clock["t"])
                transport = 0.002
                assert jtc.receive(timing.stamp, timing.time_from_start, cmd.actions, clock["t"] + transport)
                sent += 1
        t = round(t + P, 9)
    assert sent >= 3 and not jtc.rejected
    assert jtc.skipped_points == 0, f"{jtc.skipped_points} of {jtc.total_points} points were past on arrival"


@pytest.mark.parametrize("command_type", [TRAJECTORY, STREAM])
@pytest.mark.parametrize("failure", ["raises", "nan"])
def test_failures_fault_the_runner_hold_through_the_limits_and_reset_recovers(command_type, failure):
    logged = []
    p = FakePredictor()
    r = PolicyRunner(settings(command_type=command_type, hold_command="zero", max_step_delta=[30.0]), p,
                     log=logged.append)
    feed(r, 0.0)
    r.infer_once(0.0)
    r.tick(0.0)
    p.fail, p.nan = failure == "raises", failure == "nan"
    feed(r, 0.4, instruction=None)
    hold = r.infer_once(0.4)  # the next chunk fails
    assert hold is not None and hold.hold
    # zero, but at most 30 from the command in effect: the first action streamed, or the plan's last
    in_effect = 100.0 if command_type == STREAM else 107.0
    assert hold.actions[0].tolist() == [in_effect - 30] * 3
    status = r.status()
    assert status["fault"] and ("boom" in status["fault"] or "non-finite" in status["fault"]) and logged
    assert r.tick(0.45) is None and r.infer_once(0.5) is None  # nothing while faulted
    p.fail = p.nan = False
    r.reset()
    feed(r, 0.6, instruction=None)
    out = r.infer_once(0.6)
    if command_type == STREAM:
        out = r.tick(0.6)
    assert out is not None and not out.hold and np.isfinite(out.actions).all()


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
    r.infer_once(0.0)
    r.tick(0.0)
    assert r.set_instruction("open the drawer")
    assert len(r.scheduler) == 0 and r.inference_due(0.01)
    # an inference that finishes after the instruction changed is dropped
    p.gate = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("cmd", r.infer_once(0.01)))
    t.start()
    r.set_instruction("close the drawer")
    p.gate.set()
    t.join(5)
    assert out["cmd"] is None and len(r.scheduler) == 0


def test_swap_happens_between_chunks_and_bad_swaps_keep_the_old_policy():
    old, new = FakePredictor(), FakePredictor()
    r = PolicyRunner(settings(command_type=STREAM), old)
    feed(r, 0.0)
    r.infer_once(0.0)
    r.stage(new)
    assert r.predictor is old  # the running chunk finishes with the old policy
    for k in range(8):
        r.tick(k * 0.05)
    feed(r, 0.4, instruction=None)
    r.infer_once(0.4)
    assert r.predictor is new and len(new.calls) == 1
    with pytest.raises(ValueError, match="4 action dims"):
        r.stage(FakePredictor(dim=4))
    assert r.predictor is new


def test_disable_flushes_and_optionally_holds():
    r = PolicyRunner(settings(command_type=STREAM, hold_command="last"), FakePredictor())
    feed(r, 0.0)
    r.infer_once(0.0)
    last = r.tick(0.0).actions[0]
    hold = r.set_enabled(False, 0.01)
    assert hold.hold and np.array_equal(hold.actions[0], last)
    assert len(r.scheduler) == 0 and r.tick(0.05) is None
    r2 = PolicyRunner(settings(hold_command="zero"), FakePredictor())
    assert r2.set_enabled(False).actions.tolist() == [[0.0, 0.0, 0.0]]
    assert PolicyRunner(settings(), FakePredictor()).set_enabled(False) is None


def test_model_and_settings_must_agree():
    with pytest.raises(ValueError, match="takes 2 images but 1 cameras"):
        PolicyRunner(settings(camera_names=["only"]), FakePredictor())
    with pytest.raises(ValueError, match="command_type"):
        PolicyRunner(settings(command_type="twist"))
    with pytest.raises(ValueError, match="stamp_mode"):
        PolicyRunner(settings(stamp_mode="later"))


def test_stream_keeps_the_step_limit_across_chunks_and_skipped_ticks():
    clock = {"t": 0.0}
    r = PolicyRunner(settings(command_type=STREAM, max_step_delta=[0.5]), FakePredictor(chunk=8),
                     clock=lambda: clock["t"])
    sent, t = [], 0.0
    while t < 2.0:
        feed(r, t, instruction="pick the bowl")
        if r.inference_due(t):
            clock["t"] = t + 0.07  # each chunk comes back 70 ms late
            r.infer_once(t)
        tick = t + (0.12 if round(t / P) % 7 == 3 else 0.0)  # now and then a tick two periods late
        cmd = r.tick(tick)
        if cmd is not None:
            sent.append(cmd.actions[0, 0])
        t = round(t + P, 9)
    assert len(sent) > 20 and np.abs(np.diff(sent)).max() <= 0.5 + 1e-12


def test_without_latency_compensation_a_slow_chunk_starts_on_arrival():
    clock = {"t": 1.0}
    r = PolicyRunner(settings(execute_steps=4, latency_compensation=False), FakePredictor(), clock=lambda: clock["t"])
    feed(r, 0.0)
    cmd = r.infer_once(0.0)  # back a whole second later, far past its last action
    assert cmd.actions.shape == (4, 3) and cmd.due.tolist() == pytest.approx([1.0, 1.05, 1.1, 1.15])
    compensated = PolicyRunner(settings(execute_steps=4), FakePredictor(), clock=lambda: clock["t"])
    feed(compensated, 0.0)
    assert compensated.infer_once(0.0) is None and compensated.status()["rejected"] == {"late_chunk": 1}
