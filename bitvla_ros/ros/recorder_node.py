"""recorder_node (`bitvla_recorder`): teleoperated demonstrations → a LeRobot-layout dataset.

A thin shell over `bitvla_ros.data.recording.RecordingSession`: the same camera / joint /
instruction topics as the policy node plus the teleop action topic; services start, stop and
discard episodes (and an optional episode topic does the same with "start", "stop", "discard").
Each finished episode is written atomically; a write error is reported and the recorder keeps
running with the episode still in memory.
"""

from __future__ import annotations

import os

import cv2
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from bitvla_ros.data.recording import RATE, RecordingSession
from bitvla_ros.data.v3 import open_writer
from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.ros.actions import ACTION_TYPES, action_from_message
from bitvla_ros.ros.conversions import camera_input, header_seconds, node_seconds
from bitvla_ros.ros.diagnostics import OK, publish_status
from bitvla_ros.ros.params import declare
from bitvla_ros.ros.recorder_params import PARAMS, camera_name
from bitvla_ros.ros.spin import run
from bitvla_ros.ros.qos import LATCHED, subscribe_sensor

class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("bitvla_recorder", **kwargs)
        p = self.values = declare(self, PARAMS)
        topics = p["image_topics"]
        names = [n for n in p["camera_names"] if n] or [camera_name(t, i) for i, t in enumerate(topics)]
        if len(names) != len(topics) or len(set(names)) != len(names):
            raise ValueError(f"camera_names {names} must be unique, one per image topic {topics}")
        self.action_names = [n for n in p["action_names"] if n]
        if p["action_type"] not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {p['action_type']!r}")
        if not self.action_names:
            raise ValueError("action_names is empty: name each action dimension")
        mask = list(p["action_mask"])
        mask = mask * len(self.action_names) if len(mask) == 1 else mask
        proprio = [n for n in p["proprio_names"] if n]
        self.session = RecordingSession(
            lambda: open_writer(os.path.expanduser(p["dataset_dir"]), p["dataset_layout"], p["video"], p["video_codec"],
                                p["video_crf"], p["video_gop"], p["data_file_mb"], p["video_file_mb"],
                                fps=p["record_rate_hz"],
                                camera_names=names, state_names=proprio, action_names=self.action_names,
                                robot_type=p["robot_type"], image_format=p["image_format"],
                                jpeg_quality=p["jpeg_quality"], action_mask=mask,
                                dataset_name=p["dataset_name"] or None),
            names, proprio, len(self.action_names), p["max_observation_age_s"], p["sample_mode"])
        self.image_size = p["image_size"]

        for cam, topic in zip(names, topics):
            kind, convert = camera_input(topic)
            subscribe_sensor(self, kind, topic, self._image_callback(cam, convert), p["input_reliability"])
        subscribe_sensor(self, JointState, "joint_states", self._on_joint_state, p["input_reliability"])
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED)
        kind = {"joint_trajectory": JointTrajectory, "float64_multiarray": Float64MultiArray,
                "joint_state": JointState}[p["action_type"]]
        self.create_subscription(kind, p["action_topic"], self._on_action, 50)
        if p["episode_topic"]:
            self.create_subscription(String, p["episode_topic"], self._on_episode_command, 10)
        self.create_service(Trigger, "~/start_episode", lambda req, res: self._service(res, self._start))
        self.create_service(Trigger, "~/stop_episode", lambda req, res: self._service(res, self._stop))
        self.create_service(Trigger, "~/discard_episode", lambda req, res: self._service(res, self._discard))
        if p["sample_mode"] == RATE:
            self.create_timer(1.0 / p["record_rate_hz"], lambda: self.session.tick(self.now()))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Diagnostics on the wall clock: under sim time a paused sim would silence them.
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"recording {names} + {len(proprio)} joints + {p['action_type']} on "
                               f"{p['action_topic']} into {p['dataset_dir']} ({p['sample_mode']} mode)")

    def now(self) -> float:
        return node_seconds(self)

    def _refuse(self, rejection: Rejected) -> None:
        if self.session.rejections.record(rejection, self.now()):
            self.get_logger().warning(f"refused: {rejection}")

    # --- inputs --------------------------------------------------------------------------------

    def _image_callback(self, camera, convert):
        def callback(msg):
            try:
                rgb = convert(msg)
                if self.image_size and rgb.shape[:2] != (self.image_size, self.image_size):
                    rgb = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
                self.session.observations.put_image(camera, rgb, header_seconds(msg.header, self.now()))
                self.session.on_observation(self.now())
            except Rejected as r:
                self._refuse(r)
        return callback

    def _on_joint_state(self, msg) -> None:
        try:
            self.session.observations.put_joint_state(msg.name, msg.position, header_seconds(msg.header, self.now()))
            self.session.on_observation(self.now())
        except Rejected as r:
            self._refuse(r)

    def _on_instruction(self, msg) -> None:
        try:
            self.session.observations.set_instruction(msg.data)
        except Rejected as r:
            self._refuse(r)

    def _on_action(self, msg) -> None:
        try:
            vec, stamp = action_from_message(msg, self.values["action_type"], self.action_names, self.now())
            self.session.on_action(vec, stamp, self.now())
        except Rejected as r:
            self._refuse(r)

    # --- episodes ----------------------------------------------------------------------------

    def _start(self) -> str:
        return f"recording: {self.session.start(self.now())!r}"

    def _stop(self) -> str:
        index, frames = self.session.stop()
        return f"saved episode {index} ({frames} frames)"

    def _discard(self) -> str:
        return f"discarded {self.session.discard()} frames"

    def _service(self, response, action):
        try:
            response.message, response.success = action(), True
            self.get_logger().info(response.message)
        except (RuntimeError, OSError, ValueError, Rejected) as e:  # DatasetWriteError is an OSError
            response.message, response.success = str(e), False
            self.get_logger().error(response.message)
        return response

    def _on_episode_command(self, msg) -> None:
        action = {"start": self._start, "stop": self._stop, "discard": self._discard}.get(msg.data.strip().lower())
        if action is None:
            self.get_logger().warning(f"episode topic: unknown command {msg.data!r} (start, stop or discard)")
            return
        self._service(Trigger.Response(), action)

    def _publish_diagnostics(self) -> None:
        s = self.session.status()
        values = {"recording": s["recording"], "episodes": s["episodes"], "frames_in_episode": s["frames_in_episode"],
                  **{f"skipped_{k}": v for k, v in s["skipped"].items()}}
        publish_status(self, self.diag_pub, "bitvla_recorder", OK, "recording" if s["recording"] else "idle", values)

    def destroy_node(self):
        if self.session.writer is not None:
            self.session.writer.close()  # an unsaved episode is dropped, as a crash would
        return super().destroy_node()


def main(args=None) -> None:
    run(RecorderNode, SingleThreadedExecutor, args)  # the dataset writer is used from one thread only


if __name__ == "__main__":
    main()
