"""`bitvla eval`: N episodes per task through sim_node + policy_node over DDS, in lockstep.

The sim drives /clock and steps once per command; the policy runs on sim time, so its
latency does not change what it sees (as in the published evaluation). For every episode the sim
is reset to an init state (by default ones not used for recording) and the policy is reset and
enabled. Writes results.json (episodes, success per task with a 95% Wilson interval, latency),
success.png and an MP4 per episode.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROPRIO_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "finger_left", "finger_right"]
ACTION_NAMES = ["dx", "dy", "dz", "dax", "day", "daz", "gripper"]


@dataclass
class EvalConfig:
    model: str
    output: str
    suite: str = "libero_goal"
    tasks: list[int] = field(default_factory=lambda: [1])
    episodes: int = 10
    init_start: int = 40
    seed: int = 1
    backend: str = "auto"
    image_size: int = 128
    unnorm_key: str = ""
    center_crop: str = "auto"
    max_steps: int = 0
    video: bool = True
    episode_timeout_s: float = 900.0


def run_evaluation(cfg: EvalConfig, log=print) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from bitvla_ros.ros.episodes import EpisodeDriver
    from bitvla_ros.ros.processes import NodeProcess
    from bitvla_ros.sim.evaluation import format_summary, latency_stats, success_chart, summarize

    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    sim = NodeProcess("bitvla_ros.ros.sim_node", "bitvla_sim", {
        "suite": cfg.suite, "task_id": cfg.tasks[0], "init_state": cfg.init_start, "seed": cfg.seed,
        "image_size": cfg.image_size, "mode": "lockstep", "max_steps": cfg.max_steps, "reset_on_start": False,
        "video_dir": str(out / "videos") if cfg.video else ""}, out / "logs")
    policy = NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", {
        "model_path": str(Path(cfg.model).expanduser()), "backend": cfg.backend, "unnorm_key": cfg.unnorm_key,
        "center_crop": cfg.center_crop, "use_sim_time": True,
        "image_topics": ["agentview/image_raw", "wrist/image_raw"], "proprio_names": PROPRIO_NAMES,
        "action_names": ACTION_NAMES, "command_type": "joint_trajectory", "control_rate_hz": 20.0,
        "execute_steps": 8, "max_observation_age_s": 0.025, "start_enabled": False}, out / "logs")
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
        log(f"policy up (backend {status.get('backend')}); evaluating {cfg.suite} tasks {cfg.tasks}, "
            f"{cfg.episodes} episodes each from init state {cfg.init_start}")
        for task in cfg.tasks:
            for i in range(cfg.episodes):
                init = cfg.init_start + i
                driver.set_params("bitvla_sim", {"task_id": task, "init_state": init})
                t0 = time.perf_counter()
                first = driver.reset_episode()
                driver.trigger("/bitvla_policy/reset")
                driver.enable("bitvla_policy", True)
                final = driver.wait_done(first["episode"], cfg.episode_timeout_s)
                driver.enable("bitvla_policy", False)
                if final is None:
                    if not (sim.alive() and policy.alive()):
                        raise RuntimeError(f"a node died:\nsim:\n{sim.log_tail()}\npolicy:\n{policy.log_tail()}")
                    final = {**first, "success": False, "done": True, "reason": "timeout"}
                record = {"task_id": task, "init_state": init, "instruction": first["instruction"],
                          "success": bool(final["success"]), "steps": final["step"], "reason": final["reason"],
                          "wall_s": round(time.perf_counter() - t0, 1)}
                episodes.append(record)
                done = sum(e["success"] for e in episodes)
                log(f"  task {task} init {init}: {record['reason']} in {record['steps']} steps "
                    f"({record['wall_s']} s); {done}/{len(episodes)} so far")
        driver.spin_until(lambda: False, 1.5)  # one more diagnostics message with the last latencies
        diag = driver.diagnostics.get("bitvla_policy", {})
    finally:
        for proc in (policy, sim):
            proc.stop()
        node.destroy_node()
        rclpy.try_shutdown()

    rows = summarize(episodes)
    chunk_latency = {"p50_ms": _ms(diag.get("latency_p50_s")), "p95_ms": _ms(diag.get("latency_p95_s")),
                     "backend": diag.get("backend")}
    steps = sum(e["steps"] for e in episodes)
    wall = sum(e["wall_s"] for e in episodes)
    result = {"config": asdict(cfg), "episodes": episodes, "summary": rows, "policy_chunk_latency": chunk_latency,
              "wall_s_per_step": wall / steps if steps else None, "wall_s": round(time.perf_counter() - started, 1),
              "episode_wall": latency_stats([e["wall_s"] for e in episodes])}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    success_chart(rows, out / "success.png", f"{Path(cfg.model).name} on {cfg.suite} (init states "
                  f"{cfg.init_start}..{cfg.init_start + cfg.episodes - 1})")
    log("\n" + format_summary(rows))
    log(f"policy inference per chunk (preprocess + forward, backend {chunk_latency['backend']}): "
        f"p50 {chunk_latency['p50_ms']} ms, p95 {chunk_latency['p95_ms']} ms; "
        f"wall {result['wall_s']} s in all ({result['wall_s_per_step']:.3f} s per sim step incl. rendering)"
        if steps else "no steps ran")
    log(f"results: {out / 'results.json'}, chart: {out / 'success.png'}"
        + (f", videos: {out / 'videos'}" if cfg.video else ""))
    return result


def _ms(seconds) -> float | None:
    try:
        return round(float(seconds) * 1e3, 1)
    except (TypeError, ValueError):
        return None
