"""`bitvla record`: demonstrations from the scripted expert, through the real ROS path.

sim_node (lockstep, expert on) publishes cameras, joint states, the instruction and the expert's
commands on the teleop topic, each command stamped with the observation it answered;
recorder_node (action mode, sim time) pairs them into frames and writes the dataset. Successful
episodes are saved, failed ones discarded.

Which episodes: every init state of `states_for(task)` (by default the train split, 0–34; states of
the validation and test splits, and the test env seeds, are refused unless `allow_eval_states`),
under every env seed of `seeds`, `repeats` times each. With `dart_noise` the arm executes the expert's action plus noise
while the clean action is recorded (bitvla_ros/sim/dart.py); each repeat then draws other noise
(noise seed `noise_seed + repeat`), so repeats are different recovery demonstrations. Every run
appends its settings and episodes to `<output>_logs/recordings.jsonl`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bitvla_ros.ros.evaluate import ACTION_NAMES, PROPRIO_NAMES


@dataclass
class RecordConfig:
    output: str
    suite: str = "libero_goal"
    tasks: list[int] = field(default_factory=lambda: [1])
    episodes: int | None = None        # with init_start: consecutive states (the older way to say init_states)
    init_start: int | None = None
    init_states: list[int] | None = None              # for every task; None = the train split
    task_init_states: dict[int, list[int]] = field(default_factory=dict)   # per-task override
    seeds: list[int] = field(default_factory=lambda: [0])
    image_size: int = 128
    repeats: int = 1
    dart_noise: float = 0.0
    dart_correlation: float = 0.0
    noise_seed: int = 0
    allow_eval_states: bool = False    # record on validation/test states (then no figure on them is held out)
    episode_timeout_s: float = 900.0
    layout: str = "v3.0"  # dataset layout (recorder_node's dataset_layout)
    video: bool = True  # v3.0: cameras as MP4

    def __post_init__(self):
        from bitvla_ros.sim.splits import SPLITS, TEST_SEEDS, check_apart, check_in_range, split_states

        if (self.episodes is not None or self.init_start is not None) and self.init_states is not None:
            raise ValueError("expected either init_states or init_start/episodes, got both")
        if self.init_start is not None and self.episodes is None:
            raise ValueError(f"expected episodes with init_start {self.init_start} (or init_states such as 0-34)")
        if self.init_states is None:
            self.init_states = (list(range(self.init_start or 0, (self.init_start or 0) + self.episodes))
                                if self.episodes is not None else list(split_states("train")))
        unknown = sorted(set(self.task_init_states) - set(self.tasks))
        if unknown:
            raise ValueError(f"init states given for tasks {unknown}, which are not among the tasks {self.tasks}")
        if self.repeats < 1 or (self.repeats > 1 and self.dart_noise <= 0):
            raise ValueError(f"expected repeats >= 1, and > 1 only with dart_noise (the expert is deterministic: a "
                             f"repeat without noise is the same episode again), got {self.repeats}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"expected distinct env seeds, got {self.seeds}")
        held_out = [*SPLITS["validation"], *SPLITS["test"]]
        if not self.allow_eval_states:
            check_apart(self.seeds, TEST_SEEDS, "env seeds", "the test seeds",
                        "record with other seeds (e.g. 0,4,5), or pass --allow-eval-states")
        for task in self.tasks:
            states = self.states_for(task)
            check_in_range(states)
            if not self.allow_eval_states:
                check_apart(states, held_out, f"task {task}: init states", "the validation and test splits",
                            "record on the train split (0-34), or pass --allow-eval-states and report no figure "
                            "on those states")

    def states_for(self, task: int) -> list[int]:
        return self.task_init_states.get(task, self.init_states)

    def schedule(self) -> list[tuple[int, int, int, int]]:
        """(seed, task, init state, repeat) of every episode: seeds outermost (each builds its envs once)."""
        return [(seed, task, init, r) for seed in self.seeds for task in self.tasks
                for init in self.states_for(task) for r in range(self.repeats)]


def run_recording(cfg: RecordConfig, log=print) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from bitvla_ros.ros.episodes import EpisodeDriver
    from bitvla_ros.ros.processes import NodeProcess
    from bitvla_ros.sim.splits import ranges_text

    out = Path(cfg.output).expanduser()
    logs = out.parent / f"{out.name}_logs"
    schedule = cfg.schedule()
    sim = NodeProcess("bitvla_ros.ros.sim_node", "bitvla_sim", {
        "suite": cfg.suite, "task_id": cfg.tasks[0], "init_state": schedule[0][2], "seed": cfg.seeds[0],
        "image_size": cfg.image_size, "mode": "lockstep", "expert": True, "reset_on_start": False,
        "expert_noise": float(cfg.dart_noise), "expert_noise_correlation": float(cfg.dart_correlation),
        "expert_noise_seed": cfg.noise_seed}, logs)
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
    log(f"recording {cfg.suite} tasks {cfg.tasks}: {len(schedule)} episodes (init states "
        + "; ".join(f"task {t}: {ranges_text(cfg.states_for(t))}" for t in cfg.tasks)
        + f"; env seeds {cfg.seeds}; {cfg.repeats} per state"
        + (f"; DART noise sigma {cfg.dart_noise}, correlation {cfg.dart_correlation})" if cfg.dart_noise else ")"))
    try:
        sim.start()
        recorder.start()
        if not driver.wait_for_diagnostics("bitvla_recorder", 300):
            raise RuntimeError(f"the recorder did not come up:\n{recorder.log_tail()}")
        for seed, task, init, repeat in schedule:
            driver.set_params("bitvla_sim", {"task_id": task, "init_state": init, "seed": seed,
                                             "expert_noise_seed": cfg.noise_seed + repeat})
            t0 = time.perf_counter()
            first = driver.reset_episode()
            driver.trigger_holding("/bitvla_recorder/start_episode", first["instruction"],
                                   undo="/bitvla_recorder/discard_episode")
            driver.trigger("/bitvla_sim/start")
            final = driver.wait_done(first["episode"], cfg.episode_timeout_s)
            where = f"seed {seed} task {task} init {init}" + (f" repeat {repeat}" if cfg.repeats > 1 else "")
            episode = {"seed": seed, "task_id": task, "init_state": init, "repeat": repeat}
            if final is not None and final["success"]:
                frames = _wait_for_frames(driver, final["step"])
                if frames < final["step"]:
                    missed = driver.diagnostics.get("bitvla_recorder", {}).get("skipped_missed", "0")
                    log(f"  {where}: the recorder paired {frames} of {final['step']} commands "
                        f"({missed} commands without a complete observation so far; logs in {logs})")
                message = driver.trigger("/bitvla_recorder/stop_episode")
                saved.append({**episode, "steps": final["step"]})
                log(f"  {where}: solved in {final['step']} steps, {message} ({time.perf_counter() - t0:.0f} s)")
            else:
                driver.trigger("/bitvla_recorder/discard_episode")
                failed.append(episode)
                log(f"  {where}: expert failed ({(final or {}).get('reason', 'timeout')}); discarded")
    finally:
        for proc in (recorder, sim):
            proc.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        _append_log(logs, cfg, saved, failed)
    log(f"recorded {len(saved)} episodes ({len(failed)} expert failures discarded) into {out} "
        f"in {time.perf_counter() - started:.0f} s; settings and episodes appended to {logs / 'recordings.jsonl'}")
    return {"saved": saved, "failed": failed}


def _append_log(logs: Path, cfg: RecordConfig, saved: list, failed: list) -> None:
    """Which states, seeds and noise a dataset's episodes came from (the dataset holds frames, not these)."""
    logs.mkdir(parents=True, exist_ok=True)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": asdict(cfg),
             "saved": saved, "failed": failed}
    with open(logs / "recordings.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def _wait_for_frames(driver, steps: int, timeout: float = 5.0) -> int:
    """Frames the recorder holds once it has paired all `steps` commands, or after `timeout`.
    The sim's done status and its last command travel on different topics: stopping at once could
    drop the final frame."""
    def frames() -> int:
        diag = driver.diagnostics.get("bitvla_recorder", {})
        return int(diag.get("frames_in_episode", 0)) if diag.get("recording") == "True" else 0
    driver.spin_until(lambda: frames() >= steps, timeout)
    return frames()
