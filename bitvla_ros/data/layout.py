"""Where things live in a dataset and what its features are.

Two layouts, both LeRobot's. v3.0 (written by default, see v3.py):
```
root/
  meta/info.json                               schema: fps, features (video info too), totals, templates
  meta/tasks.parquet                           task_index per task (the task string is the pandas index)
  meta/episodes/chunk-000/file-000.parquet     one row per episode: length, tasks, where its rows and
                                               clips are, its per-feature stats (stats/<feature>/<stat>)
  meta/stats.json                              per-feature stats over all episodes
  data/chunk-000/file-000.parquet              the frames of several episodes, up to data_files_size_in_mb
  videos/observation.images.<cam>/chunk-000/file-000.mp4   several episodes per file, up to video_file_mb
  dataset_statistics.json                      BitVLA's normalization statistics
```
v2.1 (the layout before; read, converted, and still writable with DatasetWriterV21):
```
root/
  meta/info.json              schema: fps, features, totals, path template
  meta/episodes.jsonl         {"episode_index", "tasks": [instruction], "length"} per episode
  meta/tasks.jsonl            {"task_index", "task"}
  meta/episodes_stats.jsonl   per-episode min/max/mean/std/count of the numeric features
  meta/stats.json             the same, over all episodes
  data/chunk-000/episode_000000.parquet   one file per episode, images embedded
  dataset_statistics.json     BitVLA's normalization statistics (docs/checkpoints.md)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CODEBASE_VERSION = "v2.1"
V3 = "v3.0"
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_TASKS = "meta/tasks.parquet"
DATA_FILE_MB = 100   # LeRobot's defaults: a data file takes episodes until it is this large
VIDEO_FILE_MB = 500
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
META = "meta"
INFO = "meta/info.json"
EPISODES = "meta/episodes.jsonl"
TASKS = "meta/tasks.jsonl"
EPISODES_STATS = "meta/episodes_stats.jsonl"
STATS = "meta/stats.json"
STATISTICS = "dataset_statistics.json"

IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
ACTION = "action"
SCALARS = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
           "task_index": "int64"}


class DatasetError(ValueError):
    """The dataset on disk is not what it should be (missing or inconsistent files)."""


def episode_path(root: Path, episode_index: int) -> Path:
    chunk = episode_index // CHUNKS_SIZE
    return Path(root) / DATA_PATH.format(episode_chunk=chunk, episode_index=episode_index)


def image_key(camera: str) -> str:
    return IMAGE_PREFIX + camera


@dataclass
class Schema:
    """What every frame holds; the same for all episodes of a dataset."""

    fps: float
    camera_names: list[str]
    state_names: list[str]
    action_names: list[str]
    robot_type: str = ""
    image_shapes: dict[str, list[int]] = field(default_factory=dict)  # camera -> [H, W, 3]; empty until known
    video: dict[str, dict] = field(default_factory=dict)  # camera -> LeRobot video info; empty: images in parquet

    def features(self) -> dict:
        feats = {}
        for cam in self.camera_names:
            if cam in self.video:
                feats[image_key(cam)] = {"dtype": "video", "shape": self.image_shapes.get(cam),
                                         "names": ["height", "width", "channels"], "info": self.video[cam]}
            else:
                feats[image_key(cam)] = {"dtype": "image", "shape": self.image_shapes.get(cam),
                                         "names": ["height", "width", "channel"]}
        feats[STATE] = {"dtype": "float32", "shape": [len(self.state_names)], "names": list(self.state_names)}
        feats[ACTION] = {"dtype": "float32", "shape": [len(self.action_names)], "names": list(self.action_names)}
        for name, dtype in SCALARS.items():
            feats[name] = {"dtype": dtype, "shape": [1], "names": None}
        return feats

    @classmethod
    def from_info(cls, info: dict, where: str) -> "Schema":
        feats = info.get("features")
        if not isinstance(feats, dict) or STATE not in feats or ACTION not in feats:
            raise DatasetError(f"{where} has no '{STATE}' and '{ACTION}' features; expected a dataset written by "
                               "DatasetWriter (LeRobot v2.1 layout)")
        cams = [k[len(IMAGE_PREFIX):] for k, v in feats.items() if k.startswith(IMAGE_PREFIX)]
        odd = [c for c in cams if feats[image_key(c)].get("dtype") not in ("image", "video")]
        if odd:
            raise DatasetError(f"{where}: camera features {odd} have dtype "
                               f"{[feats[image_key(c)].get('dtype') for c in odd]}; expected 'image' or 'video'")
        shapes = {c: list(feats[image_key(c)]["shape"]) for c in cams if feats[image_key(c)].get("shape")}
        video = {c: feats[image_key(c)].get("info") or {} for c in cams if feats[image_key(c)]["dtype"] == "video"}
        try:
            return cls(fps=info["fps"], camera_names=cams, state_names=list(feats[STATE]["names"]),
                       action_names=list(feats[ACTION]["names"]), robot_type=info.get("robot_type") or "",
                       image_shapes=shapes, video=video)
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{where} lacks {e} (fps, or the names of the state and action features)") from None

    def differences(self, other: "Schema") -> list[str]:
        """What differs from ``other``, in words (image shapes are compared only where both know them)."""
        out = []
        for name in ("camera_names", "state_names", "action_names", "fps"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name}: {theirs} on disk, {mine} here")
        if self.robot_type and other.robot_type and self.robot_type != other.robot_type:
            out.append(f"robot_type: {other.robot_type!r} on disk, {self.robot_type!r} here")
        if sorted(self.video) != sorted(other.video):
            out.append(f"cameras stored as video: {sorted(other.video)} on disk, {sorted(self.video)} here")
        for cam in set(self.image_shapes) & set(other.image_shapes):
            if list(self.image_shapes[cam]) != list(other.image_shapes[cam]):
                out.append(f"camera {cam!r} image shape: {other.image_shapes[cam]} on disk, "
                           f"{self.image_shapes[cam]} here")
        return out
