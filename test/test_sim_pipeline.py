"""The LIBERO loop over real DDS: `bitvla record` (sim expert + recorder) and `bitvla eval`
(sim + policy in lockstep), each kept to one short episode."""

import json

import numpy as np
import pytest

import tiny
from bitvla_ros.data import EpisodeDataset
from bitvla_ros.model.checkpoint import convert

pytest.importorskip("libero")


@pytest.fixture(scope="module")
def clean_recording(tmp_path_factory):
    from bitvla_ros.ros.record import RecordConfig, run_recording

    tmp_path = tmp_path_factory.mktemp("record")
    out = run_recording(RecordConfig(output=str(tmp_path / "ds"), suite="libero_goal", tasks=[9], episodes=1,
                                     init_start=0, image_size=64), log=lambda *a: None)
    return tmp_path, out


def test_record_an_expert_episode_over_ros(clean_recording, report):
    tmp_path, out = clean_recording
    assert len(out["saved"]) == 1, out
    ds = EpisodeDataset(tmp_path / "ds")
    frames = ds.frames(0)
    steps = out["saved"][0]["steps"]
    report(f"recorded goal 9 init 0: {steps} expert steps -> {len(frames)} frames")
    assert len(frames) == steps  # every command paired with the observation it answered
    assert ds.tasks == ["put the wine bottle on the rack"]
    img = frames.image("agentview", 0)
    assert img.shape == (64, 64, 3) and img.std() > 5  # a rendered scene, not a blank or noise frame
    assert frames.action[:, 6].min() >= 0 and frames.action[:, 6].max() <= 1  # gripper in model convention
    stats = json.loads((tmp_path / "ds" / "dataset_statistics.json").read_text())
    assert list(stats) == ["libero_goal_bitvla_ros"] and stats["libero_goal_bitvla_ros"]["action"]["mask"][6] is False


def test_record_with_dart_noise_over_ros(clean_recording, tmp_path):
    """sim_node perturbs the executed actions (the states leave the clean path from the first step)
    and the episode, still solved, is recorded with its provenance."""
    from bitvla_ros.ros.record import RecordConfig, run_recording

    out = run_recording(RecordConfig(output=str(tmp_path / "ds"), suite="libero_goal", tasks=[9], init_states=[0],
                                     image_size=32, dart_noise=0.1, noise_seed=0), log=lambda *a: None)
    assert len(out["saved"]) == 1, out
    noisy = EpisodeDataset(tmp_path / "ds").frames(0)
    clean = EpisodeDataset(clean_recording[0] / "ds").frames(0)
    assert len(noisy) == out["saved"][0]["steps"]
    # frame 0 is the same settled state; the noise moves the arm off the clean path right away
    np.testing.assert_allclose(noisy.state[0], clean.state[0], atol=1e-6)
    assert np.abs(noisy.state[1:6, :3] - clean.state[1:6, :3]).max() > 1e-3
    assert set(np.unique(noisy.action[:, 6])) <= {0.0, 1.0}  # gripper labels untouched
    [entry] = [json.loads(line) for line in (tmp_path / "ds_logs" / "recordings.jsonl").read_text().splitlines()]
    assert entry["config"]["dart_noise"] == 0.1 and entry["saved"][0]["init_state"] == 0
    assert "expert_noise: 0.1" in (tmp_path / "ds_logs" / "bitvla_sim.params.yaml").read_text()


def test_eval_runs_a_policy_in_lockstep_over_ros(tmp_path):
    from bitvla_ros.ros.evaluate import EvalConfig, run_evaluation

    model = tmp_path / "model"
    convert(tiny.write_published_checkpoint(tmp_path / "pub", tiny.model(seed=1)), model)
    result = run_evaluation(EvalConfig(model=str(model), output=str(tmp_path / "eval"), suite="libero_goal",
                                       tasks=[1], episodes=1, init_start=40, seeds=[1, 2], backend="reference",
                                       image_size=64, max_steps=16), log=lambda *a: None)
    for episode, seed in zip(result["episodes"], [1, 2]):  # the sim rebuilt its env for the second seed
        assert (episode["seed"], episode["init_state"], episode["steps"], episode["reason"]) == (
            seed, 40, 16, "max_steps")  # two chunks, open loop
    assert result["summary"]["all tasks"]["trials"] == 2 and list(result["per_seed"]) == ["1", "2"]
    assert result["policy_chunk_latency"]["p50_ms"] is not None
    assert (tmp_path / "eval" / "success.png").is_file()
    videos = sorted((tmp_path / "eval" / "videos").glob("*.mp4"))
    assert [v.name.split("_")[2] for v in videos] == ["seed1", "seed2"] and videos[0].stat().st_size > 1000
    assert np.isfinite(result["wall_s"])


def test_eval_jobs_split_the_episodes_and_merge_them_as_one_run(tmp_path):
    """--jobs 2 over ROS: each worker runs one seed with its own sim and policy in its own ROS
    domain; the parent writes one results.json and videos folder in the single-process order."""
    from bitvla_ros.ros.evaluate import EvalConfig, run_evaluation

    model = tmp_path / "model"
    convert(tiny.write_published_checkpoint(tmp_path / "pub", tiny.model(seed=1)), model)
    lines = []
    result = run_evaluation(EvalConfig(model=str(model), output=str(tmp_path / "eval"), suite="libero_goal",
                                       tasks=[9], episodes=2, init_start=40, seeds=[1, 2], backend="reference",
                                       image_size=64, max_steps=8, jobs=2), log=lines.append)
    assert [(e["seed"], e["init_state"], e["steps"]) for e in result["episodes"]] == [
        (1, 40, 8), (1, 41, 8), (2, 40, 8), (2, 41, 8)]
    assert list(result["per_seed"]) == ["1", "2"] and result["summary"]["all tasks"]["trials"] == 4
    assert result["config"]["jobs"] == 2 and len(result["policy_chunk_latency"]["per_job"]) == 2
    for k, seed in enumerate([1, 2]):  # each worker ran one seed, in a folder of its own
        job = json.loads((tmp_path / "eval" / "jobs" / str(k) / "results.json").read_text())
        assert {e["seed"] for e in job["episodes"]} == {seed} and job["config"]["shard"] == [k, 2]
    videos = sorted(v.name.split("_")[2] for v in (tmp_path / "eval" / "videos").glob("*.mp4"))
    assert videos == ["seed1", "seed1", "seed2", "seed2"]
    assert "in 2 jobs of 2, 2 episodes" in lines[0]


def test_lockstep_sim_sends_its_observation_again_when_no_command_comes(rclpy_context, tmp_path):
    """Cameras are best effort: if the frame a policy should answer is lost, lockstep would wait
    forever. The sim publishes the same observation again (same stamp, time does not advance)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from ros_helpers.harness import NodeProcess, spin_until

    node = rclpy.create_node("republish_probe", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    stamps = []
    node.create_subscription(JointState, "/joint_states",
                             lambda m: stamps.append((m.header.stamp.sec, m.header.stamp.nanosec)), 10)
    params = {"suite": "libero_goal", "task_id": 9, "init_state": 0, "image_size": 32, "lockstep_republish_s": 0.3}
    try:
        with NodeProcess("bitvla_ros.ros.sim_node", "bitvla_sim", params, tmp_path) as proc:
            assert spin_until(executor, lambda: len(stamps) >= 4, 180), proc.log()
    finally:
        executor.shutdown()
        node.destroy_node()
    assert len(set(stamps)) == 1, stamps  # no command, no step: the one observation, again and again
