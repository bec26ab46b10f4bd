"""rosbag2 folders (MCAP or sqlite3, as `ros2 bag record` writes them), read without a ROS install.

The one place that knows the `rosbags` library: it lists a bag's topics and yields its messages in
receive-time order, deserialized into objects with the ROS field names (header.stamp.sec, data,
...), which the message conversions of the nodes read by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
ACTION_MSGTYPES = {"joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
                   "float64_multiarray": "std_msgs/msg/Float64MultiArray", "joint_state": JOINT_STATE}


class BagError(ValueError):
    """The bag cannot be read, or lacks what the import needs."""


@dataclass(frozen=True)
class Message:
    topic: str
    msgtype: str
    time: float  # receive time in seconds (the bag's clock)
    msg: object


def topic_name(topic: str) -> str:
    """Relative names (as the nodes subscribe) are absolute in a bag recorded at the root namespace."""
    return topic if topic.startswith("/") else "/" + topic


class Bag:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"no bag at {self.path}; pass the folder `ros2 bag record -o` wrote (with metadata.yaml)")
        self._typestore = get_typestore(Stores.LATEST)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, FileNotFoundError) as e:
            raise BagError(f"could not open {self.path} as a rosbag2 folder (MCAP or sqlite3): {e}") from None
        self.topics = {c.topic: c.msgtype for c in self._reader.connections}
        self.storage = "mcap" if list(self.path.glob("*.mcap")) else "sqlite3"
        self.duration_s = self._reader.duration * 1e-9
        self.message_count = self._reader.message_count

    def require(self, topic: str, msgtypes: tuple[str, ...], why: str) -> str:
        """The topic's message type, or a BagError saying what is missing and what the bag has."""
        found = self.topics.get(topic)
        have = ", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "nothing"
        if found is None:
            raise BagError(f"{self.path} has no topic {topic} ({' or '.join(msgtypes)}, {why}); it has: {have}. "
                           "Record it too, or map the import to the topics the bag has")
        if found not in msgtypes:
            raise BagError(f"{self.path}: topic {topic} is {found}; expected {' or '.join(msgtypes)} ({why})")
        return found

    def messages(self, topics: list[str]) -> Iterator[Message]:
        """The messages of ``topics``, in receive-time order."""
        wanted = [c for c in self._reader.connections if c.topic in topics]
        try:
            for conn, t, raw in self._reader.messages(connections=wanted):
                yield Message(conn.topic, conn.msgtype, t * 1e-9, self._typestore.deserialize_cdr(raw, conn.msgtype))
        except ReaderError as e:
            raise BagError(f"{self.path} could not be read to the end: {e}") from None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
