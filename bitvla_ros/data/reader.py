"""EpisodeDataset: reads a dataset written by DatasetWriter (LeRobot v2.1 layout, images embedded).

meta/episodes.jsonl is the list of episodes a reader goes by; info.json gives the features. The
writer replaces episodes.jsonl only after the episode's file is in place, so a dataset read while
(or after) a writer crashed mid-save shows every finished episode. Episode files load on demand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitvla_ros.data.episode_file import image_bytes, read_episode_columns, scalars, vectors
from bitvla_ros.data.images import decode_image
from bitvla_ros.data.layout import (ACTION, CODEBASE_VERSION, EPISODES, INFO, STATE, STATISTICS, TASKS,
                                    DatasetError, Schema, episode_path, image_key)


@dataclass(frozen=True)
class Episode:
    index: int
    task: str  # the instruction
    length: int


@dataclass
class EpisodeFrames:
    """One episode's columns: (T, S) state, (T, A) action, (T,) timestamps, encoded images per camera."""

    index: int
    task: str
    state: np.ndarray
    action: np.ndarray
    timestamp: np.ndarray
    images: dict[str, list[bytes]] = field(default_factory=dict)  # empty when read with images=False

    def __len__(self) -> int:
        return len(self.state)

    def image(self, camera: str, t: int) -> np.ndarray:
        """Frame t of ``camera``, decoded to HxWx3 uint8 RGB."""
        if camera not in self.images:
            raise KeyError(f"no images of camera {camera!r} loaded; cameras here: {sorted(self.images)} "
                           "(read with images=True)")
        return decode_image(self.images[camera][t])


class EpisodeDataset:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = _read_json(self.root, INFO)
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{self.root / INFO} has codebase_version {version!r}; this reader handles "
                               f"{CODEBASE_VERSION!r} (LeRobot v2.1 layout) only")
        self.schema = Schema.from_info(self.info, str(self.root / INFO))
        tasks = sorted(_read_jsonl(self.root, TASKS), key=lambda r: r["task_index"])
        self.tasks: list[str] = [r["task"] for r in tasks]
        self.episodes: list[Episode] = [self._episode(row, i) for i, row in enumerate(_read_jsonl(self.root, EPISODES))]
        missing = [str(self.episode_path(e.index)) for e in self.episodes if not self.episode_path(e.index).exists()]
        if missing:
            raise DatasetError(f"{len(missing)} episode file(s) listed in {self.root / EPISODES} are missing: "
                               f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; restore them, or "
                               "run bitvla_ros.data.rebuild_meta(root) to drop them from meta")
        path = self.root / STATISTICS
        self.statistics: dict | None = json.loads(path.read_text()) if path.exists() else None

    def _episode(self, row: dict, position: int) -> Episode:
        try:
            index, tasks, length = row["episode_index"], row["tasks"], row["length"]
        except (KeyError, TypeError):
            raise DatasetError(f"{self.root / EPISODES} line {position + 1} is {row!r}; expected "
                               "{'episode_index', 'tasks', 'length'}") from None
        if index != position or not tasks or not isinstance(length, int) or length < 1:
            raise DatasetError(f"{self.root / EPISODES} line {position + 1} is {row!r}; expected episode_index "
                               f"{position}, a non-empty task list and a positive length")
        return Episode(index, tasks[0], length)

    # --- what the dataset holds ---------------------------------------------------------------------

    @property
    def fps(self) -> float:
        return self.schema.fps

    @property
    def features(self) -> dict:
        return self.info["features"]

    @property
    def camera_names(self) -> list[str]:
        return self.schema.camera_names

    @property
    def state_names(self) -> list[str]:
        return self.schema.state_names

    @property
    def action_names(self) -> list[str]:
        return self.schema.action_names

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    @property
    def name(self) -> str:
        """The key of dataset_statistics.json (the model's unnorm key); the folder name if there is none."""
        return next(iter(self.statistics)) if self.statistics else self.root.name

    @property
    def action_mask(self) -> list[bool] | None:
        return self.statistics[self.name]["action"].get("mask") if self.statistics else None

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_path(self, episode: int) -> Path:
        return episode_path(self.root, episode)

    # --- frames -----------------------------------------------------------------------------------

    def frames(self, episode: int, images: bool = True) -> EpisodeFrames:
        """Load one episode; ``images=False`` skips the image columns (much faster)."""
        if not 0 <= episode < len(self.episodes):
            raise IndexError(f"episode {episode} is out of range; the dataset has {len(self.episodes)} episodes")
        ep = self.episodes[episode]
        keys = [image_key(c) for c in self.camera_names] if images else []
        path = self.episode_path(episode)
        table = read_episode_columns(path, [*keys, STATE, ACTION, "timestamp"])
        if table.num_rows != ep.length:
            raise DatasetError(f"{path} has {table.num_rows} frames, but meta/episodes.jsonl says {ep.length}; "
                               "run bitvla_ros.data.rebuild_meta(root)")
        return EpisodeFrames(
            index=episode, task=ep.task, state=vectors(table, STATE), action=vectors(table, ACTION),
            timestamp=scalars(table, "timestamp"),
            images={c: image_bytes(table, image_key(c)) for c in self.camera_names} if images else {})


def open_datasets(paths: str | Path | list) -> list[EpisodeDataset]:
    """One or several dataset folders, checked to be recorded with the same features (so that their
    samples can be mixed in one batch)."""
    datasets = [EpisodeDataset(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    first = datasets[0]
    for ds in datasets[1:]:
        for what in ("camera_names", "state_names", "action_names", "action_mask"):
            if getattr(ds, what) != getattr(first, what):
                raise ValueError(f"{ds.root} and {first.root} differ in {what} ({getattr(ds, what)} vs "
                                 f"{getattr(first, what)}); use datasets recorded with the same features")
    return datasets


def _read_json(root: Path, rel: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise DatasetError(f"no dataset at {root}: {rel} is missing; expected a dataset written by DatasetWriter "
                           "(LeRobot v2.1 layout)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); run bitvla_ros.data.rebuild_meta(root)") from None


def _read_jsonl(root: Path, rel: str) -> list[dict]:
    path = root / rel
    if not path.is_file():
        raise DatasetError(f"{path} is missing; run bitvla_ros.data.rebuild_meta(root) to rebuild meta/ "
                           "from the episode files")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON lines ({e}); run bitvla_ros.data.rebuild_meta(root)") from None
