"""Splitting an evaluation's episodes over several worker processes, and putting the results back.

An evaluation is a list of (env seed, task, init state) episodes, seeds outermost. On a CPU the
simulator renders on one core and the policy waits for it (lockstep), so one evaluation keeps about
one core busy; `bitvla eval --jobs N` runs N workers side by side, each on a contiguous block of
that list. Contiguous blocks keep the cost of building envs where it was (one env per seed and task
in a block) and, with two seeds and two jobs, give each job one seed. The merged results are
the ones a single process would have written: the same episodes in the same order.
"""

from __future__ import annotations

from itertools import groupby
from statistics import median

Episode = tuple[int, int, int]  # (env seed, task id, init state)


def blocks(schedule: list[Episode], jobs: int) -> list[list[Episode]]:
    """``schedule`` cut into ``jobs`` contiguous blocks whose sizes differ by at most one (the first
    ones are the larger); never an empty block, so there are at most len(schedule) of them."""
    if jobs < 1:
        raise ValueError(f"expected --jobs of at least 1, got {jobs}")
    jobs = min(jobs, len(schedule)) or 1
    size, extra = divmod(len(schedule), jobs)
    out, start = [], 0
    for k in range(jobs):
        stop = start + size + (k < extra)
        out.append(schedule[start:stop])
        start = stop
    return out


def runs(block: list[Episode]) -> list[tuple[int, int, list[int]]]:
    """A block as (seed, task, consecutive init states) runs: what one env of a seed and task plays
    in a row."""
    out = []
    for (seed, task), items in groupby(block, key=lambda e: (e[0], e[1])):
        inits = [init for _, _, init in items]
        for _, group in groupby(enumerate(inits), key=lambda p: p[1] - p[0]):  # split at gaps
            out.append((seed, task, [init for _, init in group]))
    return out


def merge_episodes(schedule: list[Episode], per_job: list[list[dict]]) -> list[dict]:
    """The jobs' episode records in schedule order; refuses a missing or doubled episode."""
    by_key = {}
    for records in per_job:
        for r in records:
            key = (r["seed"], r["task_id"], r["init_state"])
            if key in by_key:
                raise ValueError(f"episode seed {key[0]} task {key[1]} init {key[2]} was run by two jobs")
            by_key[key] = r
    missing = [e for e in schedule if e not in by_key]
    if missing or len(by_key) != len(schedule):
        raise ValueError(f"expected the jobs to run {len(schedule)} episodes, got {len(by_key)}; "
                         f"missing (seed, task, init): {missing[:5]}")
    return [by_key[e] for e in schedule]


def merge_latency(per_job: list[dict]) -> dict:
    """One chunk-latency figure from the jobs': the median of their medians and the largest p95
    (each job saw only its own chunks), with every job's own figures beside them."""
    p50 = [j["p50_ms"] for j in per_job if j.get("p50_ms") is not None]
    p95 = [j["p95_ms"] for j in per_job if j.get("p95_ms") is not None]
    backends = list(dict.fromkeys(j.get("backend") for j in per_job))
    return {"p50_ms": round(median(p50), 1) if p50 else None, "p95_ms": max(p95) if p95 else None,
            "backend": backends[0] if len(backends) == 1 else backends, "per_job": per_job}
