"""`bitvla eval --in-process`: the evaluation loop without ROS, in one process.

The same pieces as the ROS path, minus DDS: `SimRunner` around a `LiberoEnv` (settle steps,
180° rotation, success = the env's done flag, the step limit, the gripper post-processing of
`model_to_env_action`), and a `BitVLAPredictor` (its processor applies the image pipeline). The
policy is queried when the queue is empty and `execute_steps` actions of its chunk are run open
loop, as policy_node + sim_node do in lockstep and as the published eval does with its action queue.
Exceptions during an episode count as a failure, as in the published eval.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable

from bitvla_ros.sim.runner import SimRunner

VIDEO_FPS = 30.0  # the published eval's MP4s


def run_episode_in_process(runner: SimRunner, predictor, task_id: int, init_state: int, execute_steps: int = 8,
                           latencies: list[float] | None = None, frames: list | None = None) -> dict:
    """One episode: reset (settle steps included), then query / execute until solved or out of steps."""
    obs = runner.reset(task_id, init_state)
    info = runner.info
    if frames is not None and obs.agentview is not None:
        frames.append(obs.agentview)
    error = None
    try:
        while runner.active:
            if not runner.queue:
                chunk = predictor.predict([obs.agentview, obs.wrist], info.instruction, obs.proprio)
                if latencies is not None:
                    latencies.append(chunk.inference_s)
                runner.command_chunk(chunk.actions[:execute_steps])
            obs = runner.step_once().observation
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
