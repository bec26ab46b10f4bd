"""Small rosbag2 recordings written with `rosbags`, as `ros2 bag record` would write them from the
recorder's topics: two cameras (Image and CompressedImage), joint_states, JointTrajectory commands,
the instruction and, optionally, the episode topic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.LATEST)
H, W = 24, 32
JOINTS = ["j0", "j1", "j2"]
ACTIONS = ["a0", "a1"]
T = TS.types


def header(t: float):
    sec = int(t)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9))),
                                    frame_id="")


def image(k: int) -> np.ndarray:
    """Frame k of a camera: flat colour, far from frame k +- 1 even after JPEG and video."""
    return np.full((H, W, 3), (k * 20) % 250, np.uint8)


def state(k: int) -> np.ndarray:
    return np.array([k, k + 0.25, -k], np.float64)


def action(k: int) -> np.ndarray:
    return np.array([k * 0.5, 1.0 - k], np.float64)


class BagRecorder:
    def __init__(self, path: Path, storage: str = "mcap", topics=("instruction",)):
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.w = Writer(path, version=9, storage_plugin=plugin)
        self.w.open()
        add = lambda topic, kind: self.w.add_connection(topic, kind, typestore=TS)  # noqa: E731
        self.conns = {
            "agentview": add("/agentview/image_raw", "sensor_msgs/msg/Image"),
            "wrist": add("/wrist/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
            "joints": add("/joint_states", "sensor_msgs/msg/JointState"),
            "action": add("/teleop/joint_command", "trajectory_msgs/msg/JointTrajectory"),
        }
        for topic in topics:
            self.conns[topic] = add("/" + topic, "std_msgs/msg/String")

    def _write(self, key: str, t: float, msg) -> None:
        self.w.write(self.conns[key], int(round(t * 1e9)), TS.serialize_cdr(msg, self.conns[key].msgtype))

    def text(self, key: str, t: float, data: str) -> None:
        self._write(key, t, T["std_msgs/msg/String"](data=data))

    def step(self, k: int, t: float, with_action: bool = True) -> None:
        """Observation k stamped t (received 1-3 ms later), and the command answering it, stamped t."""
        rgb = image(k)
        self._write("agentview", t + 0.001, T["sensor_msgs/msg/Image"](
            header=header(t), height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3,
            data=rgb.reshape(-1).copy()))
        ok, jpg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        self._write("wrist", t + 0.002, T["sensor_msgs/msg/CompressedImage"](
            header=header(t), format="jpeg", data=np.frombuffer(jpg.tobytes(), np.uint8).copy()))
        self._write("joints", t + 0.002, T["sensor_msgs/msg/JointState"](
            header=header(t), name=list(JOINTS), position=state(k), velocity=np.zeros(0), effort=np.zeros(0)))
        if with_action:
            point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=action(k), velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
            self._write("action", t + 0.003, T["trajectory_msgs/msg/JointTrajectory"](
                header=header(t), joint_names=list(ACTIONS), points=[point]))

    def close(self) -> None:
        self.w.close()


PARAMS = {"image_topics": ["agentview/image_raw", "wrist/image_raw/compressed"], "proprio_names": JOINTS,
          "action_names": ACTIONS, "action_mask": [True, False], "sample_mode": "action", "record_rate_hz": 10.0}
