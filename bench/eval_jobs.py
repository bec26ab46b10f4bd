"""Episodes per hour of `bitvla eval` with one process against --jobs N, on the same episodes.

    .venv/bin/python bench/eval_jobs.py [--model models/bitvla-libero-goal-demo] [--jobs 2]
        [--tasks 1,9] [--episodes 2] [--max-steps 120] [--in-process]

Runs the same evaluation (validation init states from 35, env seed 0, no videos) first in one
process, then split over N jobs, in this process one after the other, and prints the wall time,
the sim steps per second and the ratio. Each run's episode outcomes are printed beside it, to show
that both ran the same episodes. Over ROS by default (what `bitvla select` runs); --in-process
without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/bitvla-libero-goal-demo")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--tasks", default="1,9")
    p.add_argument("--episodes", type=int, default=2, help="init states per task, from 35")
    p.add_argument("--max-steps", type=int, default=120, help="steps per episode (a short cap keeps it brief)")
    p.add_argument("--in-process", action="store_true")
    args = p.parse_args()

    from bitvla_ros.ros.ros_env import isolate

    if not args.in_process:
        isolate()
    from bitvla_ros.kernels.autotune import cpu_model
    from bitvla_ros.ros.evaluate import EvalConfig, run_evaluation

    tasks = [int(t) for t in args.tasks.split(",")]
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; model {args.model}; "
          f"{'in process' if args.in_process else 'over ROS'}; tasks {tasks}, {args.episodes} init states "
          f"from 35, env seed 0, at most {args.max_steps} steps")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, args.jobs):
            cfg = EvalConfig(model=args.model, output=f"{tmp}/jobs{jobs}", tasks=tasks, episodes=args.episodes,
                             init_start=35, seeds=[0], max_steps=args.max_steps, video=False,
                             in_process=args.in_process, jobs=jobs)
            t0 = time.perf_counter()
            result = run_evaluation(cfg, log=lambda *a: None)
            wall = time.perf_counter() - t0
            steps = sum(e["steps"] for e in result["episodes"])
            outcomes = [(e["task_id"], e["init_state"], e["reason"], e["steps"]) for e in result["episodes"]]
            figures[jobs] = (wall, steps)
            print(f"jobs {jobs}: {wall:6.1f} s wall, {steps} sim steps, {steps / wall:5.2f} steps/s, "
                  f"{len(outcomes) / wall * 3600:5.0f} episodes/h; outcomes {outcomes}", flush=True)
    (w1, s1), (wn, sn) = figures[1], figures[args.jobs]
    print(f"throughput jobs {args.jobs} / jobs 1: {(sn / wn) / (s1 / w1):.2f}x (sim steps per second)")


if __name__ == "__main__":
    main()
