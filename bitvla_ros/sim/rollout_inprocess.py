"""`bitvla eval --in-process`: the evaluation loop without ROS, in one process.

The same pieces as the ROS path, minus DDS: `SimRunner` around a `LiberoEnv` (settle steps,
180° rotation, success = the env's done flag, the step limit, the gripper post-processing of
`model_to_env_action`), and the policy node's own core, `PolicyRunner`, driven with the
simulator's clock: each step the observation goes into its buffer stamped with sim time, it infers
when a chunk is due (every `execute_steps` steps, as in lockstep over ROS) and its control tick
hands out the action of the current slot, through the same scheduler and safety filter the robot
gets. A fault (an exception or a non-finite chunk) ends the episode as a failure, as the published
eval counts any exception.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable

from bitvla_ros.policy.runner import STREAM, PolicyRunner, PolicySettings
from bitvla_ros.sim.runner import ACTION_NAMES, CAMERA_NAMES, PROPRIO_NAMES, SimRunner

VIDEO_FPS = 30.0  # the published eval's MP4s
CONTROL_RATE_HZ = 20.0  # LIBERO's


class _Timed:
    """The predictor, keeping the inference time of every chunk it computes."""

    def __init__(self, predictor, latencies: list[float] | None):
        self.predictor, self.model, self.latencies = predictor, predictor.model, latencies

    def predict(self, images, instruction, proprio):
        chunk = self.predictor.predict(images, instruction, proprio)
        if self.latencies is not None:
            self.latencies.append(chunk.inference_s)
        return chunk


def policy_runner(predictor, execute_steps: int, clock: Callable[[], float],
                  latencies: list[float] | None = None) -> PolicyRunner:
    """The runner the ROS evaluation's policy node would run, set up for the simulated robot."""
    settings = PolicySettings(camera_names=list(CAMERA_NAMES), proprio_names=list(PROPRIO_NAMES),
                              action_names=list(ACTION_NAMES), control_rate_hz=CONTROL_RATE_HZ,
                              execute_steps=execute_steps, command_type=STREAM, start_enabled=True,
                              max_observation_age_s=float("inf"))
    return PolicyRunner(settings, _Timed(predictor, latencies), clock=clock)


def run_episode_in_process(runner: SimRunner, predictor, task_id: int, init_state: int, execute_steps: int = 8,
                           latencies: list[float] | None = None, frames: list | None = None) -> dict:
    """One episode: reset (settle steps included), then observe / tick / step until solved or out of steps."""
    obs = runner.reset(task_id, init_state)
    info = runner.info
    if frames is not None and obs.agentview is not None:
        frames.append(obs.agentview)
    sim = {"t": 0.0}
    policy = policy_runner(predictor, execute_steps, clock=lambda: sim["t"], latencies=latencies)
    period = policy.settings.period
    error = None
    try:
        policy.set_instruction(info.instruction)
        while runner.active:
            t = sim["t"]
            for camera, image in zip(CAMERA_NAMES, (obs.agentview, obs.wrist)):
                policy.observations.put_image(camera, image, t)
            policy.observations.put_joint_state(PROPRIO_NAMES, obs.proprio, t)
            policy.infer_once(t)
            command = policy.tick(t)
            if policy.fault:
                raise RuntimeError(policy.fault)
            if command is None:
                raise RuntimeError(f"the policy had no action for step {info.step} (status {policy.status()})")
            runner.command_action(command.actions[0])
            obs = runner.step_once().observation
            sim["t"] = round(t + period, 9)
            if frames is not None and obs.agentview is not None:
                frames.append(obs.agentview)
    except Exception as e:  # noqa: BLE001 - the published eval counts any exception as a failure
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    return {"task_id": task_id, "init_state": init_state, "instruction": info.instruction,
            "success": bool(info.success) and error is None, "steps": info.step,
            "reason": f"error: {error}" if error else info.reason}


def run_in_process(predictor, suite: str, tasks: list[int], episodes: int, init_start: int, image_size: int,
                   env_seed: int, max_steps: int = 0, execute_steps: int = 8, video_dir: str | Path | None = None,
                   log: Callable[[str], None] = print, make_env: Callable[[int], object] | None = None
                   ) -> tuple[list[dict], list[float]]:
    """``episodes`` per task from init state ``init_start`` on; returns (episode records, per-chunk
    inference seconds). ``make_env(task_id)`` replaces the LIBERO env (tests)."""
    if make_env is None:
        from bitvla_ros.sim.libero_env import LiberoEnv

        def make_env(task: int):
            return LiberoEnv(suite, task, image_size=image_size, cameras=True, seed=env_seed)

    runner = SimRunner(make_env, max_steps=max_steps)
    records: list[dict] = []
    latencies: list[float] = []
    try:
        for task in tasks:
            for i in range(episodes):
                start = time.perf_counter()
                frames: list | None = [] if video_dir else None
                record = run_episode_in_process(runner, predictor, task, init_start + i, execute_steps,
                                                latencies, frames)
                record["wall_s"] = round(time.perf_counter() - start, 1)
                records.append(record)
                if video_dir and frames:
                    from bitvla_ros.sim.video import write_mp4

                    name = (f"episode_{len(records):04d}_task{task}_init{record['init_state']}_"
                            f"{record['reason'].split(':')[0]}.mp4")
                    write_mp4(frames, Path(video_dir).expanduser() / name, fps=VIDEO_FPS)
                done = sum(r["success"] for r in records)
                log(f"  task {task} init {record['init_state']}: {record['reason']} in {record['steps']} steps "
                    f"({record['wall_s']} s); {done}/{len(records)} so far")
    finally:
        runner.close()
    return records, latencies
