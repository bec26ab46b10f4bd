"""`bitvla eval`: N episodes per task through sim_node + policy_node over DDS, in lockstep.

The sim drives /clock and steps once per command; the policy runs on sim time, so its
latency does not change what it sees (as in the published evaluation). For every episode the sim
is reset to an init state (by default ones not used for recording) and the policy is reset and
enabled. Several env seeds run in one call (`seeds`), each over the same init states; the states
come from `init_start`/`episodes` or a named split (bitvla_ros/sim/splits.py). Writes results.json
(episodes, success per task with a 95% Wilson interval per seed and pooled, latency), success.png
and an MP4 per episode.

Two protocols set the defaults: "ros" (this project's: held-out init states from 40, 128 px
renders, the model's own image pipeline) and "libero", the published BitVLA evaluation
(docs/libero.md): 256 px renders, every task of the suite, 50 trials per task from init
state 0, env seed 0, policy seed 7, the LIBERO image pipeline (JPEG, Lanczos3, TF center crop),
open-loop chunks of 8, the suite's step limit and the suite name as unnorm key. Anything given
explicitly overrides them. `in_process` runs the same loop without ROS
(bitvla_ros/sim/rollout_inprocess.py); `jobs` splits the episodes over worker processes and merges
their results (bitvla_ros/ros/eval_jobs.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bitvla_ros.sim.runner import ACTION_NAMES, PROPRIO_NAMES  # the sim robot's names (record and tests use them)


PROTOCOLS = ("ros", "libero")


@dataclass
class EvalConfig:
    """None means the protocol's default (see the module doc)."""

    model: str
    output: str
    suite: str = "libero_goal"
    tasks: list[int] | None = None
    episodes: int | None = None
    init_start: int | None = None
    seeds: list[int] | None = None    # env seeds; every one runs the same init states
    split: str | None = None          # a named split of init states (train, validation, test) instead of the two above
    backend: str = "auto"
    device: str = "auto"              # where the policy runs: auto, cpu, cuda, cuda:N
    image_size: int | None = None
    unnorm_key: str = ""
    center_crop: str = "auto"
    max_steps: int = 0                # 0 = the suite's limit
    video: bool = True
    # The sim renders on one core; on a small CPU the policy is faster on the other one alone (0 = all).
    policy_threads: int = 1
    episode_timeout_s: float = 900.0
    protocol: str = "ros"
    in_process: bool = False
    image_pipeline: str | None = None  # auto, siglip or libero
    policy_seed: int | None = None     # torch/numpy/random seed of the policy; -1 = unseeded
    execute_steps: int = 8
    jobs: int = 1                     # worker processes the episodes are split over (bitvla_ros/sim/jobs.py)
    shard: list[int] | None = None    # [k, n]: this worker runs block k of n (set by the parent of the jobs)

    def __post_init__(self):
        if self.split is not None:
            from bitvla_ros.sim.splits import split_states

            states = split_states(self.split)
            given = (self.init_start, self.episodes)
            if given != (None, None) and given != (states.start, len(states)):
                raise ValueError(f"split {self.split!r} is init states {states.start}..{states.stop - 1}; "
                                 f"expected no --init-start/--episodes with it, got {given}")
            self.init_start, self.episodes = states.start, len(states)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "libero":
            from bitvla_ros.sim import protocol as published

            if self.suite not in published.TASKS_PER_SUITE:
                raise ValueError(f"expected a LIBERO suite among {sorted(published.TASKS_PER_SUITE)}, "
                                 f"got {self.suite!r}")
            defaults = {"tasks": list(range(published.TASKS_PER_SUITE[self.suite])),
                        "episodes": published.TRIALS_PER_TASK, "init_start": 0, "seeds": [published.ENV_SEED],
                        "image_size": published.RENDER_SIZE, "image_pipeline": "libero",
                        "policy_seed": published.SEED}
            self.unnorm_key = self.unnorm_key or self.suite  # then suite + "_no_noops" (NormStats.load)
        else:
            defaults = {"tasks": [1], "episodes": 10, "init_start": 40, "seeds": [1], "image_size": 128,
                        "image_pipeline": "auto", "policy_seed": -1}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"expected distinct env seeds like [1, 2], got {self.seeds}")
        from bitvla_ros.sim.splits import check_in_range

        check_in_range(self.init_states)

    @property
    def init_states(self) -> range:
        return range(self.init_start, self.init_start + self.episodes)


def run_evaluation(cfg: EvalConfig, log=print) -> dict:
    if cfg.jobs > 1 and cfg.shard is None:
        from bitvla_ros.ros.eval_jobs import run_jobs

        return run_jobs(cfg, log)
    if cfg.in_process:
        return _run_in_process(cfg, log)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from bitvla_ros.ros.episodes import EpisodeDriver
    from bitvla_ros.ros.processes import NodeProcess
    from bitvla_ros.sim.evaluation import format_summary, latency_stats, success_chart, summarize

    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    mine = _my_episodes(cfg)
    sim = NodeProcess("bitvla_ros.ros.sim_node", "bitvla_sim", {
        "suite": cfg.suite, "task_id": mine[0][1], "init_state": mine[0][2], "seed": mine[0][0],
        "image_size": cfg.image_size, "mode": "lockstep", "max_steps": cfg.max_steps, "reset_on_start": False,
        "video_dir": str(out / "videos") if cfg.video else ""}, out / "logs")
    policy = NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", {
        "model_path": str(Path(cfg.model).expanduser()), "backend": cfg.backend, "device": cfg.device,
        "unnorm_key": cfg.unnorm_key,
        "center_crop": cfg.center_crop, "image_pipeline": cfg.image_pipeline, "seed": cfg.policy_seed,
        "use_sim_time": True, "image_topics": ["agentview/image_raw", "wrist/image_raw"],
        "proprio_names": PROPRIO_NAMES, "action_names": ACTION_NAMES, "command_type": "joint_trajectory",
        "control_rate_hz": 20.0, "execute_steps": cfg.execute_steps, "max_observation_age_s": 0.025,
        "start_enabled": False, "num_threads": cfg.policy_threads, "input_reliability": "reliable"}, out / "logs")
    rclpy.init()
    node = rclpy.create_node("bitvla_eval")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    driver = EpisodeDriver(node, executor)
    episodes, started = [], time.perf_counter()
    try:
        sim.start()
        policy.start()
        if not driver.wait_for_diagnostics("bitvla_policy", 300):
            raise RuntimeError(f"the policy node did not come up:\n{policy.log_tail()}")
        status = driver.diagnostics["bitvla_policy"]
        if status.get("message") == "no model loaded":
            raise RuntimeError(f"the policy node could not load {cfg.model}:\n{policy.log_tail()}")
        log(f"policy up (backend {status.get('backend')}, device {status.get('device')}); {_plan(cfg)}")
        _note_jpeg_decoder(cfg, log)
        for seed, task, init in mine:
            # A new seed rebuilds the sim's env (fixture placement and layout are drawn from it).
            driver.set_params("bitvla_sim", {"task_id": task, "init_state": init, "seed": seed})
            t0 = time.perf_counter()
            first = driver.reset_episode()
            if first.get("seed") != seed:
                raise RuntimeError(f"expected the sim to run env seed {seed}, it reports {first.get('seed')}")
            # Enabled before a new task's instruction arrives, the policy would answer with the last task's.
            driver.trigger_holding("/bitvla_policy/reset", first["instruction"])
            driver.enable("bitvla_policy", True)
            final = driver.wait_done(first["episode"], cfg.episode_timeout_s)
            driver.enable("bitvla_policy", False)
            if final is None:
                if not (sim.alive() and policy.alive()):
                    raise RuntimeError(f"a node died:\nsim:\n{sim.log_tail()}\npolicy:\n{policy.log_tail()}")
                final = {**first, "success": False, "done": True, "reason": "timeout"}
            record = {"seed": seed, "task_id": task, "init_state": init, "instruction": first["instruction"],
                      "success": bool(final["success"]), "steps": final["step"], "reason": final["reason"],
                      "wall_s": round(time.perf_counter() - t0, 1)}
            episodes.append(record)
            done = sum(e["success"] for e in episodes)
            log(f"  seed {seed} task {task} init {init}: {record['reason']} in {record['steps']} steps "
                f"({record['wall_s']} s); {done}/{len(episodes)} so far")
        driver.spin_until(lambda: False, 1.5)  # one more diagnostics message with the last latencies
        diag = driver.diagnostics.get("bitvla_policy", {})
    finally:
        for proc in (policy, sim):
            proc.stop()
        node.destroy_node()
        rclpy.try_shutdown()

    chunk_latency = {"p50_ms": _ms(diag.get("latency_p50_s")), "p95_ms": _ms(diag.get("latency_p95_s")),
                     "backend": diag.get("backend")}
    return _write_results(cfg, out, episodes, chunk_latency, started, log)


def _run_in_process(cfg: EvalConfig, log=print) -> dict:
    """The same episodes without ROS: LiberoEnv + BitVLAPredictor in this process."""
    from bitvla_ros.model.predict import BitVLAPredictor
    from bitvla_ros.sim.evaluation import latency_stats
    from bitvla_ros.sim.protocol import seed_everything
    from bitvla_ros.sim.jobs import runs
    from bitvla_ros.sim.rollout_inprocess import run_in_process

    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.policy_seed is not None and cfg.policy_seed >= 0:
        seed_everything(cfg.policy_seed)
    crop = {"auto": None, "true": True, "false": False}[str(cfg.center_crop).lower()]
    predictor = BitVLAPredictor.from_pretrained(
        Path(cfg.model).expanduser(), backend=cfg.backend, unnorm_key=cfg.unnorm_key or None, center_crop=crop,
        image_pipeline=None if cfg.image_pipeline == "auto" else cfg.image_pipeline, device=cfg.device)
    backend = getattr(predictor.model, "backend_name", None) or cfg.backend
    log(f"model loaded in process ({predictor.summary()}; image pipeline {predictor.processor.image_pipeline}, "
        f"unnorm key {predictor.stats.key}); {_plan(cfg)}")
    _note_jpeg_decoder(cfg, log)
    if cfg.shard is not None and cfg.policy_threads > 0:  # one of several jobs: share the cores
        import torch

        torch.set_num_threads(cfg.policy_threads)
    episodes, latencies = [], []
    for seed, task, inits in runs(_my_episodes(cfg)):
        log(f" env seed {seed}, task {task}")
        records, chunk_seconds = run_in_process(
            predictor, cfg.suite, [task], len(inits), inits[0], cfg.image_size, seed,
            max_steps=cfg.max_steps, execute_steps=cfg.execute_steps,
            video_dir=out / "videos" / f"seed{seed}" if cfg.video else None, log=log)
        episodes += [{"seed": seed, **r} for r in records]
        latencies += chunk_seconds
    stats = latency_stats(latencies)
    chunk_latency = {"p50_ms": _round(stats.get("p50_ms")), "p95_ms": _round(stats.get("p95_ms")), "backend": backend}
    return _write_results(cfg, out, episodes, chunk_latency, started, log)


def _schedule(cfg: EvalConfig):
    """(seed, task, init state) of every episode: seeds outermost, so each seed builds its envs once."""
    return [(seed, task, init) for seed in cfg.seeds for task in cfg.tasks for init in cfg.init_states]


def _my_episodes(cfg: EvalConfig):
    """The episodes this process runs: all of them, or its block when it is one of several jobs."""
    if cfg.shard is None:
        return _schedule(cfg)
    from bitvla_ros.sim.jobs import blocks

    k, n = cfg.shard
    return blocks(_schedule(cfg), n)[k]


def _plan(cfg: EvalConfig) -> str:
    from bitvla_ros.sim.splits import describe

    share = f", {len(_my_episodes(cfg))} of them in this job" if cfg.shard is not None else ""
    return (f"evaluating {cfg.suite} tasks {cfg.tasks} on init states {describe(cfg.init_states)}, env seeds "
            f"{cfg.seeds}: {_count(len(_schedule(cfg)), 'episode')}{share} ({cfg.protocol} protocol)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _write_results(cfg: EvalConfig, out: Path, episodes: list[dict], chunk_latency: dict, started: float,
                   log=print) -> dict:
    from bitvla_ros.sim.evaluation import (format_summary, grouped_rate_chart, latency_stats, seed_table,
                                           success_chart, summarize, summarize_by_seed)
    from bitvla_ros.sim.protocol import default_jpeg_decoder
    from bitvla_ros.sim.splits import ranges_text, splits_of

    rows, per_seed = summarize(episodes), summarize_by_seed(episodes)
    steps = sum(e["steps"] for e in episodes)
    wall = sum(e["wall_s"] for e in episodes)
    # What a reader of the figures needs to know: which states and seeds they come from.
    protocol = {"init_states": ranges_text(cfg.init_states), "splits": splits_of(cfg.init_states),
                "seeds": cfg.seeds, "tasks": cfg.tasks, "episodes_per_seed": len(cfg.tasks) * cfg.episodes}
    result = {"config": asdict(cfg), "evaluated_on": protocol, "episodes": episodes, "summary": rows,
              "per_seed": per_seed, "policy_chunk_latency": chunk_latency,
              "jpeg_decoder": default_jpeg_decoder() if cfg.image_pipeline == "libero" else None,
              "wall_s_per_step": wall / steps if steps else None, "wall_s": round(time.perf_counter() - started, 1),
              "episode_wall": latency_stats([e["wall_s"] for e in episodes])}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (f"{Path(cfg.model).name} on {cfg.suite}, init states {protocol['init_states']}, "
             f"seed{'s' if len(cfg.seeds) > 1 else ''} {', '.join(map(str, cfg.seeds))}")
    if len(per_seed) > 1:
        grouped_rate_chart(seed_table(per_seed, rows), out / "success.png", title)
        for seed, seed_rows in per_seed.items():
            log(f"\nenv seed {seed}:\n" + format_summary(seed_rows))
        log(f"\npooled over seeds {cfg.seeds}:")
    else:
        success_chart(rows, out / "success.png", title)
    log("\n" + format_summary(rows))
    log(f"policy inference per chunk (preprocess + forward, backend {chunk_latency['backend']}): "
        f"p50 {chunk_latency['p50_ms']} ms, p95 {chunk_latency['p95_ms']} ms; "
        f"wall {result['wall_s']} s in all ({result['wall_s_per_step']:.3f} s per sim step incl. rendering)"
        if steps else "no steps ran")
    log(f"results: {out / 'results.json'}, chart: {out / 'success.png'}"
        + (f", videos: {out / 'videos'}" if cfg.video else ""))
    return result


def _note_jpeg_decoder(cfg: EvalConfig, log) -> None:
    from bitvla_ros.sim.protocol import default_jpeg_decoder

    if cfg.image_pipeline == "libero" and default_jpeg_decoder() != "simplejpeg":
        log("note: JPEG round trip decoded with OpenCV (accurate IDCT); TensorFlow, as in the published eval, "
            "decodes with the fast IDCT (~1 level per pixel apart after the resize). `pip install simplejpeg` "
            "to decode as TensorFlow does.")


def _round(ms) -> float | None:
    return None if ms is None else round(float(ms), 1)


def _ms(seconds) -> float | None:
    try:
        return round(float(seconds) * 1e3, 1)
    except (TypeError, ValueError):
        return None
