"""recorder_node's parameters (one table, read by the node and by `bitvla import-bag`, which pairs
a bag's messages with the same settings), importable without ROS."""

from __future__ import annotations

from bitvla_ros.data.recording import RATE
from bitvla_ros.data.v3 import LAYOUTS
from bitvla_ros.data.video import CODECS
from bitvla_ros.ros.params import Param

PARAMS = [
    Param("dataset_dir", "~/bitvla_datasets/demo", "dataset folder; episodes are appended if it exists", read_only=True),
    Param("dataset_name", "", "key of dataset_statistics.json ('' = the folder name)", read_only=True),
    Param("robot_type", "", "robot type written to meta/info.json", read_only=True),
    Param("image_topics", ["camera/image_raw"], "camera topics; a topic ending in '/compressed' is read as "
          "sensor_msgs/CompressedImage", read_only=True),
    Param("camera_names", [""], "dataset camera names, one per image topic ('' = derived from the topic)",
          read_only=True),
    Param("proprio_names", [""], "joints read from joint_states into observation.state, in order", read_only=True),
    Param("action_topic", "teleop/joint_command", "topic of the teleoperator's commands", read_only=True),
    Param("action_type", "joint_trajectory", "joint_trajectory (first point), float64_multiarray or joint_state",
          read_only=True),
    Param("action_names", [""], "action dimensions in order (joint names of trajectory/joint_state messages)",
          read_only=True),
    Param("action_mask", [True], "per action dimension: normalize in training (false for a gripper); one value "
          "applies to all", read_only=True),
    Param("sample_mode", RATE, "rate: a frame every 1/record_rate_hz from the latest inputs; action: a frame per "
          "action message, paired with the observation carrying the action's stamp", read_only=True),
    Param("record_rate_hz", 20.0, "frames per second in rate mode (and the dataset fps)", read_only=True),
    Param("input_reliability", "best_effort", "camera and joint-state subscriptions: best_effort (any publisher) "
          "or reliable (every sample; needs reliable publishers)", read_only=True),
    Param("max_observation_age_s", 0.5, "skip a frame whose oldest input is older than this"),
    Param("image_size", 0, "store images resized to this square size (0 = as received)", read_only=True),
    Param("dataset_layout", "v3.0", "v3.0 (LeRobot's current layout) or v2.1 (one parquet file per episode)",
          read_only=True, choices=LAYOUTS),
    Param("video", True, "v3.0: store cameras as MP4 (small); false: as images inside the parquet files",
          read_only=True),
    Param("video_codec", "libx264", "libx264 (H.264, read everywhere), libsvtav1 (AV1, smaller) or hevc",
          read_only=True, choices=CODECS),
    Param("video_crf", 23, "video quality: 0 lossless .. 51 worst (H.264: 18 is near-transparent)", read_only=True,
          limits=(0, 51)),
    Param("video_gop", 2, "keyframe interval: 2 = any frame decodes after at most one other (fast training reads)",
          read_only=True),
    Param("data_file_mb", 100.0, "v3.0: a data file takes episodes until it is this large", read_only=True,
          limits=(0.001, 1e6)),
    Param("video_file_mb", 500.0, "v3.0: a camera's video file takes episodes until it is this large",
          read_only=True, limits=(0.001, 1e6)),
    Param("image_format", "jpeg", "jpeg or png (lossless) for images inside the parquet files", read_only=True),
    Param("jpeg_quality", 95, "JPEG quality", read_only=True),
    Param("episode_topic", "", "optional std_msgs/String topic taking start / stop / discard ('' = off)",
          read_only=True),
]


def camera_name(topic: str, index: int) -> str:
    parts = [p for p in topic.strip("/").split("/") if p not in ("image_raw", "compressed", "image", "image_color")]
    return parts[-1] if parts else f"camera_{index}"
