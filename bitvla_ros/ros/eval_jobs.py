"""`bitvla eval --jobs N`: the episodes split over N worker processes, then merged.

Each worker is a `bitvla eval` of one contiguous block of the episodes (bitvla_ros/sim/jobs.py) in
`<output>/jobs/<k>`: its own sim and policy node in a ROS domain of its own, or in process. The
parent waits for them and writes one results.json, chart and videos folder over all episodes, as a
single process would have. A worker's own folder keeps its logs and results for a look at what it did.

Run as a module, this is a worker: `python -m bitvla_ros.ros.eval_jobs '<EvalConfig as JSON>'`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from bitvla_ros.ros.evaluate import EvalConfig, _plan, _schedule, _write_results, run_evaluation
from bitvla_ros.ros.ros_env import current_domain, isolation_env, job_domain
from bitvla_ros.sim.jobs import blocks, merge_episodes, merge_latency


def run_jobs(cfg: EvalConfig, log=print) -> dict:
    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    schedule = _schedule(cfg)
    parts = blocks(schedule, cfg.jobs)
    n = len(parts)
    log(f"{_plan(cfg)}, in {n} jobs of {', '.join(str(len(p)) for p in parts)} episodes")
    base = current_domain()
    workers = []
    try:
        for k in range(n):
            job = replace(cfg, output=str(out / "jobs" / str(k)), jobs=1, shard=[k, n])
            env = {**os.environ, **({} if cfg.in_process else isolation_env(job_domain(base, k)))}
            cmd = [sys.executable, "-m", "bitvla_ros.ros.eval_jobs", json.dumps(asdict(job))]
            workers.append((job, subprocess.Popen(cmd, env=env)))
        _wait(workers)
    finally:
        for _, proc in workers:  # only on an error or an interrupt are any still running
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    results = [json.loads((Path(job.output) / "results.json").read_text()) for job, _ in workers]
    episodes = merge_episodes(schedule, [r["episodes"] for r in results])
    _gather_videos([Path(job.output) / "videos" for job, _ in workers], out / "videos")
    return _write_results(cfg, out, episodes, merge_latency([r["policy_chunk_latency"] for r in results]),
                          started, log)


def _wait(workers) -> None:
    while True:
        codes = [proc.poll() for _, proc in workers]
        failed = [(job, rc) for (job, _), rc in zip(workers, codes) if rc not in (None, 0)]
        if failed:
            job, rc = failed[0]
            raise RuntimeError(f"eval job {job.shard[0] + 1} of {job.shard[1]} exited with {rc} (its output is "
                               f"above, its logs in {job.output}); the other jobs were stopped")
        if all(rc == 0 for rc in codes):
            return
        time.sleep(1.0)


def _gather_videos(folders: list[Path], dest: Path) -> None:
    """Every job's MP4s into one folder; names carry seed, task and init state, so they do not clash."""
    for folder in folders:
        for f in sorted(folder.rglob("*.mp4")) if folder.is_dir() else []:
            target = dest / f.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), target)


def main(argv: list[str] | None = None) -> int:
    cfg = EvalConfig(**json.loads((argv or sys.argv[1:])[0]))
    k, n = cfg.shard
    prefix = f"[job {k + 1}/{n}] "

    def log(message="") -> None:
        print("\n".join(prefix + line for line in str(message).splitlines()), flush=True)

    run_evaluation(cfg, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
