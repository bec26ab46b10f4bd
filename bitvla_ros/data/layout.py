"""Where things live in a dataset (LeRobot v2.1 layout) and what its features are.

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

    def features(self) -> dict:
        feats = {}
        for cam in self.camera_names:
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
        if any(feats[image_key(c)].get("dtype") != "image" for c in cams):
            raise DatasetError(f"{where}: camera features must have dtype 'image' (embedded images); "
                               "video-encoded datasets are not supported")
        shapes = {c: feats[image_key(c)]["shape"] for c in cams if feats[image_key(c)].get("shape")}
        try:
            return cls(fps=info["fps"], camera_names=cams, state_names=list(feats[STATE]["names"]),
                       action_names=list(feats[ACTION]["names"]), robot_type=info.get("robot_type") or "",
                       image_shapes=shapes)
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
        for cam in set(self.image_shapes) & set(other.image_shapes):
            if list(self.image_shapes[cam]) != list(other.image_shapes[cam]):
                out.append(f"camera {cam!r} image shape: {other.image_shapes[cam]} on disk, "
                           f"{self.image_shapes[cam]} here")
        return out
