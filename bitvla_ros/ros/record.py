"""`bitvla record`: demonstrations from the scripted expert, through the real ROS path.

sim_node (lockstep, expert on) publishes cameras, joint states, the instruction and the expert's
commands on the teleop topic, each command stamped with the observation it answered;
recorder_node (action mode, sim time) pairs them into frames and writes the dataset. Successful
episodes are saved, failed ones discarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bitvla_ros.ros.evaluate import ACTION_NAMES, PROPRIO_NAMES


@dataclass
class RecordConfig:
    output: str
    suite: str = "libero_goal"
    tasks: list[int] = field(default_factory=lambda: [1])
    episodes: int = 40
    init_start: int = 0
    seed: int = 0
    image_size: int = 128
    episode_timeout_s: float = 900.0
    layout: str = "v3.0"  # dataset layout (recorder_node's dataset_layout)
    video: bool = True  # v3.0: cameras as MP4


def run_recording(cfg: RecordConfig, log=print) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from bitvla_ros.ros.episodes import EpisodeDriver
    from bitvla_ros.ros.processes import NodeProcess

    out = Path(cfg.output).expanduser()
    logs = out.parent / f"{out.name}_logs"
    sim = NodeProcess("bitvla_ros.ros.sim_node", "bitvla_sim", {
        "suite": cfg.suite, "task_id": cfg.tasks[0], "init_state": cfg.init_start, "seed": cfg.seed,
        "image_size": cfg.image_size, "mode": "lockstep", "expert": True, "reset_on_start": False}, logs)
    recorder = NodeProcess("bitvla_ros.ros.recorder_node", "bitvla_recorder", {
        "dataset_dir": str(out), "dataset_name": f"{cfg.suite}_bitvla_ros", "robot_type": "panda",
        "image_topics": ["agentview/image_raw", "wrist/image_raw"], "proprio_names": PROPRIO_NAMES,
        "action_topic": "teleop/joint_command", "action_type": "joint_trajectory", "action_names": ACTION_NAMES,
        "action_mask": [True] * 6 + [False], "sample_mode": "action", "record_rate_hz": 20.0,
        "use_sim_time": True, "max_observation_age_s": 1.0, "input_reliability": "reliable",
        "dataset_layout": cfg.layout, "video": cfg.video}, logs)
    rclpy.init()
    node = rclpy.create_node("bitvla_record")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    driver = EpisodeDriver(node, executor)
    saved, failed, started = [], [], time.perf_counter()
    try:
        sim.start()
        recorder.start()
        if not driver.wait_for_diagnostics("bitvla_recorder", 300):
            raise RuntimeError(f"the recorder did not come up:\n{recorder.log_tail()}")
        for task in cfg.tasks:
            for i in range(cfg.episodes):
                init = cfg.init_start + i
                driver.set_params("bitvla_sim", {"task_id": task, "init_state": init})
                t0 = time.perf_counter()
                first = driver.reset_episode()
                driver.trigger_holding("/bitvla_recorder/start_episode", first["instruction"],
                                       undo="/bitvla_recorder/discard_episode")
                driver.trigger("/bitvla_sim/start")
                final = driver.wait_done(first["episode"], cfg.episode_timeout_s)
                if final is not None and final["success"]:
                    frames = _wait_for_frames(driver, final["step"])
                    if frames < final["step"]:
                        missed = driver.diagnostics.get("bitvla_recorder", {}).get("skipped_missed", "0")
                        log(f"  task {task} init {init}: the recorder paired {frames} of {final['step']} commands "
                            f"({missed} commands without a complete observation so far; logs in {logs})")
                    message = driver.trigger("/bitvla_recorder/stop_episode")
                    saved.append((task, init, final["step"]))
                    log(f"  task {task} init {init}: solved in {final['step']} steps, {message} "
                        f"({time.perf_counter() - t0:.0f} s)")
                else:
                    driver.trigger("/bitvla_recorder/discard_episode")
                    failed.append((task, init))
                    log(f"  task {task} init {init}: expert failed ({(final or {}).get('reason', 'timeout')}); discarded")
    finally:
        for proc in (recorder, sim):
            proc.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    log(f"recorded {len(saved)} episodes ({len(failed)} expert failures discarded) into {out} "
        f"in {time.perf_counter() - started:.0f} s")
    return {"saved": saved, "failed": failed}


def _wait_for_frames(driver, steps: int, timeout: float = 5.0) -> int:
    """Frames the recorder holds once it has paired all `steps` commands, or after `timeout`.
    The sim's done status and its last command travel on different topics: stopping at once could
    drop the final frame."""
    def frames() -> int:
        diag = driver.diagnostics.get("bitvla_recorder", {})
        return int(diag.get("frames_in_episode", 0)) if diag.get("recording") == "True" else 0
    driver.spin_until(lambda: frames() >= steps, timeout)
    return frames()
