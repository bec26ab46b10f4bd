"""Success rate and episode length of the scripted LIBERO expert, cameras off.

    /work/simvenv/bin/python bench/expert.py [--tasks libero_goal:1,libero_goal:4] [-n 10] [--first 0] [-v]

Runs init states first..first+n-1 of each task once (no retries), under the eval's step limit, and
prints per task: successes, mean/min/max policy steps of the successful episodes (settle steps not
counted), and the wall time. -v prints every episode with the step at which each phase began.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitvla_ros.sim.expert import ScriptedExpert  # noqa: E402
from bitvla_ros.sim.libero_env import LiberoEnv  # noqa: E402
from bitvla_ros.sim.rollout import run_episode  # noqa: E402

DEFAULT_TASKS = "libero_goal:1,libero_goal:4,libero_goal:9"


def parse_tasks(text: str) -> list[tuple[str, int]]:
    tasks = []
    for item in text.split(","):
        suite, sep, task_id = item.strip().rpartition(":")
        if not sep or not task_id.isdigit():
            raise SystemExit(f"expected tasks as suite:id[,suite:id...], got {item!r}")
        tasks.append((suite, int(task_id)))
    return tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"suite:id list (default {DEFAULT_TASKS})")
    p.add_argument("-n", type=int, default=10, help="init states per task (default 10)")
    p.add_argument("--first", type=int, default=0, help="first init state (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every episode and its phases")
    args = p.parse_args()

    rows, start = [], time.perf_counter()
    for suite, task_id in parse_tasks(args.tasks):
        t0 = time.perf_counter()
        with LiberoEnv(suite, task_id, cameras=False) as env:
            expert = ScriptedExpert(env)
            n = min(args.n, env.num_init_states - args.first)
            episodes = []
            for i in range(args.first, args.first + n):
                ep = run_episode(env, expert, i)
                episodes.append(ep)
                if args.verbose:
                    phases = " ".join(f"{name}@{step}" for step, name in ep.phases)
                    print(f"  {suite}:{task_id} init {i:2d}: {'ok  ' if ep.success else 'FAIL'} "
                          f"{ep.steps:3d} steps  {phases}", flush=True)
            rows.append((suite, task_id, env.instruction, episodes, env.max_steps, time.perf_counter() - t0))

    print(f"\n{'task':16s} {'instruction':42s} {'success':>9s} {'mean':>6s} {'min':>4s} {'max':>4s} "
          f"{'limit':>5s} {'wall s':>7s}")
    for suite, task_id, instruction, episodes, limit, wall in rows:
        ok = [e.steps for e in episodes if e.success]
        stats = (f"{statistics.mean(ok):6.1f} {min(ok):4d} {max(ok):4d}" if ok else f"{'-':>6s} {'-':>4s} {'-':>4s}")
        print(f"{f'{suite}:{task_id}':16s} {instruction[:42]:42s} {len(ok):4d}/{len(episodes):<4d} {stats} "
              f"{limit:5d} {wall:7.1f}")
    print(f"total wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
