"""`bitvla eval --jobs N`: how the episodes are split over workers and how their results go back
together (bitvla_ros/sim/jobs.py); the workers themselves run in test_sim_pipeline.py."""

import pytest

from bitvla_ros.ros.evaluate import EvalConfig, _my_episodes, _schedule
from bitvla_ros.ros.ros_env import job_domain
from bitvla_ros.sim.jobs import blocks, merge_episodes, merge_latency, runs


def test_blocks_cover_the_schedule_once_in_order_and_balance():
    schedule = [(s, t, i) for s in (1, 2) for t in (1, 4, 9) for i in range(40, 50)]
    for jobs in (1, 2, 3, 7, 60, 100):
        parts = blocks(schedule, jobs)
        assert [e for p in parts for e in p] == schedule
        sizes = [len(p) for p in parts]
        assert len(parts) == min(jobs, 60) and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    first, second = blocks(schedule, 2)
    assert {s for s, _, _ in first} == {1} and {s for s, _, _ in second} == {2}  # two seeds, two jobs: a seed each
    with pytest.raises(ValueError, match="at least 1"):
        blocks(schedule, 0)


def test_runs_group_a_block_by_seed_and_task_and_split_at_gaps():
    block = [(1, 9, 45), (1, 9, 46), (1, 9, 47), (2, 1, 40), (2, 1, 41), (2, 4, 40), (2, 4, 43)]
    assert runs(block) == [(1, 9, [45, 46, 47]), (2, 1, [40, 41]), (2, 4, [40]), (2, 4, [43])]


def test_each_worker_runs_its_own_block():
    cfg = EvalConfig(model="m", output="o", tasks=[1, 4, 9], split="test", seeds=[1, 2], jobs=2)
    assert len(_my_episodes(cfg)) == 60  # the parent's view: every episode
    mine = [_my_episodes(EvalConfig(model="m", output="o", tasks=[1, 4, 9], split="test", seeds=[1, 2],
                                    shard=[k, 2])) for k in range(2)]
    assert mine[0] + mine[1] == _schedule(cfg) and len(mine[0]) == 30


def test_merged_episodes_come_back_in_schedule_order_and_none_is_lost_or_doubled():
    schedule = [(1, 1, 40), (1, 1, 41), (2, 1, 40)]

    def rec(seed, init):
        return {"seed": seed, "task_id": 1, "init_state": init, "success": True}

    merged = merge_episodes(schedule, [[rec(2, 40)], [rec(1, 41), rec(1, 40)]])
    assert [(e["seed"], e["init_state"]) for e in merged] == [(1, 40), (1, 41), (2, 40)]
    with pytest.raises(ValueError, match="missing"):
        merge_episodes(schedule, [[rec(1, 40)], [rec(2, 40)]])
    with pytest.raises(ValueError, match="two jobs"):
        merge_episodes(schedule, [[rec(1, 40), rec(1, 41)], [rec(1, 41), rec(2, 40)]])


def test_merged_latency_keeps_every_job_and_the_worst_tail():
    jobs = [{"p50_ms": 10.0, "p95_ms": 14.0, "backend": "cpu"}, {"p50_ms": 20.0, "p95_ms": 31.0, "backend": "cpu"},
            {"p50_ms": 12.0, "p95_ms": 13.0, "backend": "cpu"}]
    merged = merge_latency(jobs)
    assert (merged["p50_ms"], merged["p95_ms"], merged["backend"]) == (12.0, 31.0, "cpu")
    assert merged["per_job"] == jobs
    assert merge_latency([{"p50_ms": None, "p95_ms": None, "backend": "x"}])["p50_ms"] is None


def test_job_domains_are_distinct_and_valid():
    for base in (1, 50, 101):
        domains = [job_domain(base, k) for k in range(8)]
        assert len(set(domains)) == 8 and all(1 <= d <= 101 for d in domains) and domains[0] == base
