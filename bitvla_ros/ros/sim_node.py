"""sim_node (`bitvla_sim`): a LIBERO task over ROS 2, for a policy and a recorder to talk to.

Publishes both cameras (upright), the 8-D proprio as a JointState, the task's instruction
(latched) and the episode's status; executes 7-D delta-EEF commands from joint_command (a
JointTrajectory chunk or a Float64MultiArray stream; gripper in the model's convention, 1 = open).
`lockstep` steps once per command and drives /clock (run the other nodes with use_sim_time), so
a slow policy is evaluated as if it were instantaneous; `realtime` steps at `control_rate_hz`,
holding still when no command is queued. With `expert: true` the scripted expert drives and
publishes each of its commands on the teleop topic, stamped with the observation it answered; it
waits after each reset until ~/start, so that a recorder can begin the episode first. With
`expert_noise` > 0 the arm executes the expert's command plus Gaussian noise while the teleop topic
carries the clean command (DART-style recovery demonstrations, bitvla_ros/sim/dart.py).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from bitvla_ros.ros.conversions import rgb_to_image
from bitvla_ros.ros.params import Param, declare
from bitvla_ros.ros.spin import run
from bitvla_ros.ros.qos import LATCHED

from bitvla_ros.sim.runner import ACTION_NAMES, PROPRIO_NAMES
SIM_TIME_START = 1000.0  # stamps of 0 mean "unstamped" to the other nodes

PARAMS = [
    Param("suite", "libero_goal", "LIBERO suite: libero_spatial, libero_object, libero_goal, libero_10, libero_90",
          read_only=True),
    Param("task_id", 1, "task of the suite; a change takes effect at the next ~/reset"),
    Param("init_state", 0, "LIBERO init state index used by the next ~/reset"),
    Param("seed", 0, "env seed (the published eval uses 0); a change rebuilds the env at the next ~/reset"),
    Param("image_size", 128, "camera resolution (square); rendering cost does not depend on it", read_only=True),
    Param("mode", "lockstep", "lockstep (one step per command, drives /clock) or realtime", read_only=True),
    Param("control_rate_hz", 20.0, "env steps per second of (sim) time", read_only=True),
    Param("command_type", "joint_trajectory", "joint_trajectory or float64_multiarray on joint_command",
          read_only=True),
    Param("expert", False, "the scripted expert drives and publishes its commands on teleop_topic", read_only=True),
    Param("teleop_topic", "teleop/joint_command", "where the expert's commands go (JointTrajectory)", read_only=True),
    Param("expert_noise", 0.0, "std of the Gaussian noise added to the expert's executed arm actions (env units, "
          "±1 = ±5 cm / ±0.5 rad per step); the teleop topic keeps the clean action (0 = off)", read_only=True),
    Param("expert_noise_correlation", 0.0, "AR(1) coefficient of that noise from step to step (0 = independent)",
          read_only=True),
    Param("expert_noise_seed", 0, "seed of the execution noise, with the env seed and init state; a change takes "
          "effect at the next ~/reset"),
    Param("max_steps", 0, "steps per episode (0 = the suite's evaluation limit)", read_only=True),
    Param("lockstep_republish_s", 1.0,
          "lockstep: publish the current observation again (same stamp and clock) when no command has come "
          "for this many wall seconds; cameras are best effort, and one lost frame would stall the episode "
          "(0 = never)", read_only=True),
    Param("reset_on_start", True, "start the first episode (init_state) without a call to ~/reset", read_only=True),
    Param("video_dir", "", "write an MP4 of each episode's agentview here ('' = no video)", read_only=True),
]


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("bitvla_sim", **kwargs)
        p = self.values = declare(self, PARAMS)
        if p["mode"] not in ("lockstep", "realtime"):
            raise ValueError(f"mode must be lockstep or realtime, got {p['mode']!r}")
        from bitvla_ros.sim.libero_env import LiberoEnv
        from bitvla_ros.sim.runner import SimRunner

        expert = None
        if p["expert"]:
            from bitvla_ros.sim.expert import ScriptedExpert as expert
        elif p["expert_noise"] > 0:
            raise ValueError("expert_noise perturbs the scripted expert's actions; expected expert: true with it")

        def make_env(task: int):
            env = LiberoEnv(p["suite"], task, image_size=p["image_size"], cameras=True,
                            seed=self.get_parameter("seed").value)
            if p["expert_noise"] > 0:
                from bitvla_ros.sim.dart import NoisyExecution

                env = NoisyExecution(env, p["expert_noise"], p["expert_noise_correlation"],
                                     noise_seed=self.get_parameter("expert_noise_seed").value)
            return env

        self.runner = SimRunner(make_env, expert_factory=expert, max_steps=p["max_steps"])
        self.lockstep, self.period = p["mode"] == "lockstep", 1.0 / p["control_rate_hz"]
        self.sim_time = SIM_TIME_START
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.cam_pubs = {name: self.create_publisher(Image, f"{name}/image_raw", reliable)
                         for name in ("agentview", "wrist")}
        self.joint_pub = self.create_publisher(JointState, "joint_states", reliable)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        status_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.status_pub = self.create_publisher(String, "episode_status", status_qos)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.lockstep else None
        self.teleop_pub = self.create_publisher(JointTrajectory, p["teleop_topic"], 50) if p["expert"] else None
        kind = JointTrajectory if p["command_type"] == "joint_trajectory" else Float64MultiArray
        self.create_subscription(kind, "joint_command", self._on_command, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/start", self._on_start)

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._frames: list = []
        self._published_at, self.republished = time.monotonic(), 0
        # MuJoCo's EGL context belongs to the thread that made it: the env is created, reset and
        # stepped only on the sim thread; services hand it requests through this queue.
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="bitvla_sim_steps", daemon=True)
        self._thread.start()
        if p["reset_on_start"]:
            self._requests.put((self._reset, None))

    # --- time and publishing -------------------------------------------------------------------

    def _stamp(self) -> Time:
        if self.lockstep:
            sec = int(self.sim_time)
            return Time(sec=sec, nanosec=int(round((self.sim_time - sec) * 1e9)))
        return self.get_clock().now().to_msg()

    def _publish_observation(self, obs) -> Time:
        stamp = self._stamp()
        for name, rgb in (("agentview", obs.agentview), ("wrist", obs.wrist)):
            if rgb is not None:
                msg = rgb_to_image(Image(), rgb)
                msg.header.stamp, msg.header.frame_id = stamp, name
                self.cam_pubs[name].publish(msg)
        js = JointState(name=PROPRIO_NAMES, position=[float(v) for v in obs.proprio])
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
        self._published_at = time.monotonic()
        return stamp

    def _republish_if_stalled(self) -> None:
        """Lockstep waits for a command; if the observation it answers was lost, send it again."""
        every = self.values["lockstep_republish_s"]
        if every <= 0 or time.monotonic() - self._published_at < every:
            return
        with self._lock:
            if self.runner.awaiting_command:
                self._publish_observation(self.runner.observation)
                self.republished += 1

    def _publish_status(self) -> None:
        info = self.runner.info
        self.status_pub.publish(String(data=json.dumps({
            "episode": info.episode, "suite": self.values["suite"], "seed": self.runner.env.seed,
            "task_id": info.task_id,
            "init_state": info.init_state, "instruction": info.instruction, "step": info.step,
            "success": info.success, "done": info.done, "reason": info.reason,
            "republished": self.republished})))

    # --- episodes ------------------------------------------------------------------------------

    def _reset(self) -> str:
        with self._lock:
            self._finish_video()
            task = self.get_parameter("task_id").value
            init = self.get_parameter("init_state").value
            env = self.runner.env
            if env is not None and env.seed != self.get_parameter("seed").value:
                self.runner.close()  # the env's layout and fixture draws come from its seed: build it anew
            if self.runner.env is not None and self.values["expert_noise"] > 0:
                self.runner.env.noise_seed = self.get_parameter("expert_noise_seed").value
            obs = self.runner.reset(task, init)
            self._frames = [obs.agentview] if obs.agentview is not None else []
            self.instruction_pub.publish(String(data=self.runner.info.instruction))
            self._publish_observation(obs)
            self._publish_status()
        self._wake.set()
        return f"episode {self.runner.info.episode}: task {task} init state {init}: {self.runner.info.instruction!r}"

    def _on_reset(self, request, response):
        done: queue.Queue = queue.Queue()
        self._requests.put((self._reset, done))
        self._wake.set()
        ok, message = done.get()
        response.success, response.message = ok, message if ok else f"reset failed: {message}"
        self.get_logger().info(response.message)
        return response

    def _on_start(self, request, response):
        """Let the expert begin the episode (it waits after each reset so a recorder can start first)."""
        with self._lock:
            self.runner.paused = False
        self._wake.set()
        response.success, response.message = True, "running"
        return response

    def _on_command(self, msg) -> None:
        with self._lock:
            if isinstance(msg, JointTrajectory):
                self.runner.command_chunk([list(p.positions) for p in msg.points])
            else:
                self.runner.command_action(list(msg.data))
        self._wake.set()

    # --- stepping ------------------------------------------------------------------------------

    def _serve_requests(self) -> None:
        while not self._requests.empty():
            work, done = self._requests.get()
            try:
                result = (True, work())
            except (ValueError, RuntimeError, OSError) as e:
                result = (False, str(e))
                self.get_logger().error(f"sim request failed: {e}")
            if done is not None:
                done.put(result)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._serve_requests()
            if self.lockstep:
                with self._lock:
                    ready = self.runner.has_action()
                if not ready:
                    self._wake.wait(0.05)
                    self._wake.clear()
                    self._republish_if_stalled()
                    continue
                self._step(hold=False)
            else:
                start = self.get_clock().now().nanoseconds * 1e-9
                self._step(hold=True)
                spent = self.get_clock().now().nanoseconds * 1e-9 - start
                self._stop.wait(max(0.0, self.period - spent))
        self.runner.close()  # on this thread, which owns the GL context

    def _step(self, hold: bool) -> None:
        with self._lock:
            stamp_before = self._stamp()
            try:
                result = self.runner.step_once(hold=hold)
            except ValueError as e:  # a malformed command: drop it, keep the sim running
                self.get_logger().warning(f"dropped a command: {e}")
                return
            if result is None:
                return
            if result.teleop is not None:  # the expert's command answers the observation before it
                point = JointTrajectoryPoint(positions=[float(v) for v in result.teleop])
                cmd = JointTrajectory(joint_names=ACTION_NAMES, points=[point])
                cmd.header.stamp = stamp_before
                self.teleop_pub.publish(cmd)
            self.sim_time += self.period
            self._publish_observation(result.observation)
            if result.observation.agentview is not None and self.values["video_dir"]:
                self._frames.append(result.observation.agentview)
            if result.done:
                self._publish_status()
                self._finish_video()
                self.get_logger().info(f"episode {self.runner.info.episode} done: {self.runner.info.reason} "
                                       f"after {result.step} steps")

    def _finish_video(self) -> None:
        info, folder = self.runner.info, self.values["video_dir"]
        if not folder or info is None or not self._frames:
            return
        from bitvla_ros.sim.video import write_mp4

        name = (f"episode_{info.episode:04d}_seed{self.runner.env.seed}_task{info.task_id}_"
                f"init{info.init_state}_{info.reason}.mp4")
        write_mp4(self._frames, Path(folder).expanduser() / name, fps=1.0 / self.period)
        self._frames = []

    def destroy_node(self):
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        return super().destroy_node()


def main(args=None) -> None:
    # Stepping runs on the sim thread and services only hand it work, so one executor thread serves;
    # rclpy's multi-threaded one would spin a core (bitvla_ros/ros/spin.py).
    run(SimNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
