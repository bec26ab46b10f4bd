"""EpisodeDataset: reads LeRobot v3.0 datasets (ours or LeRobot's, images in parquet or as video)
and LeRobot v2.1 datasets (ours, images embedded).

The list of episodes a reader goes by is meta/episodes/*.parquet (v3.0) or meta/episodes.jsonl
(v2.1); info.json gives the features. Writers replace that list only after the episode's files are
in place, so a dataset read while (or after) a writer crashed mid-save shows every finished
episode; v3.0 rows and clips the list does not name are ignored. Frames load on demand; video
frames are decoded one at a time with a seek (see video.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bitvla_ros.data.episode_file import image_bytes, read_episode_columns, scalars, vectors
from bitvla_ros.data.images import decode_image
from bitvla_ros.data.layout import (ACTION, CODEBASE_VERSION, EPISODES, INFO, STATE, STATISTICS, TASKS, V3,
                                    DatasetError, Schema, episode_path, image_key)
from bitvla_ros.data.v3_files import RECORDED_TIME, data_path, read_data, read_episodes, read_tasks, video_path
from bitvla_ros.data.video import ClipCache, ClipFrames

VERSIONS = (V3, CODEBASE_VERSION)


@dataclass(frozen=True)
class Episode:
    index: int
    task: str  # the instruction
    length: int


@dataclass
class EpisodeFrames:
    """One episode's columns: (T, S) state, (T, A) action, (T,) timestamps (seconds since the episode
    start, as recorded), and per camera its frames: encoded images, or a clip decoding on access."""

    index: int
    task: str
    state: np.ndarray
    action: np.ndarray
    timestamp: np.ndarray
    images: dict[str, Sequence] = field(default_factory=dict)  # empty when read with images=False

    def __len__(self) -> int:
        return len(self.state)

    def image(self, camera: str, t: int) -> np.ndarray:
        """Frame t of ``camera``, decoded to HxWx3 uint8 RGB."""
        if camera not in self.images:
            raise KeyError(f"no images of camera {camera!r} loaded; cameras here: {sorted(self.images)} "
                           "(read with images=True)")
        frame = self.images[camera][t]
        return decode_image(frame) if isinstance(frame, bytes) else frame


class EpisodeDataset:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = _read_json(self.root, INFO)
        self.version = self.info.get("codebase_version")
        if self.version not in VERSIONS:
            raise DatasetError(f"{self.root / INFO} has codebase_version {self.version!r}; this reader handles "
                               f"{' and '.join(VERSIONS)} (LeRobot layouts)")
        self.schema = Schema.from_info(self.info, str(self.root / INFO))
        path = self.root / STATISTICS
        self.statistics: dict | None = json.loads(path.read_text()) if path.exists() else None
        self._clips = ClipCache()
        self._table: tuple[Path, list[str], object] | None = None  # the data file read last
        if self.version == V3:
            self.tasks = read_tasks(self.root)
            rows = read_episodes(self.root)
            self.episodes = [Episode(r["episode_index"], r["task"], r["length"]) for r in rows]
            self._where = [r["where"] for r in rows]
            files = {data_path(self.root, *w.data) for w in self._where}
            files |= {video_path(self.root, c, f, i) for w in self._where for c, (f, i, _, _) in w.videos.items()}
            missing = sorted(str(p) for p in files if not p.exists())
            if missing:
                raise DatasetError(f"{len(missing)} file(s) named in {self.root / 'meta/episodes'} are missing: "
                                   f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; restore them")
            return
        tasks = sorted(_read_jsonl(self.root, TASKS), key=lambda r: r["task_index"])
        self.tasks: list[str] = [r["task"] for r in tasks]
        self.episodes: list[Episode] = [self._episode(row, i) for i, row in enumerate(_read_jsonl(self.root, EPISODES))]
        missing = [str(self.episode_path(e.index)) for e in self.episodes if not self.episode_path(e.index).exists()]
        if missing:
            raise DatasetError(f"{len(missing)} episode file(s) listed in {self.root / EPISODES} are missing: "
                               f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; restore them, or "
                               "run bitvla_ros.data.rebuild_meta(root) to drop them from meta")

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
        """The data file holding the episode's frames (v3.0: shared with other episodes)."""
        if self.version == V3:
            return data_path(self.root, *self._where[episode].data)
        return episode_path(self.root, episode)

    # --- frames -----------------------------------------------------------------------------------

    def frames(self, episode: int, images: bool = True) -> EpisodeFrames:
        """Load one episode; ``images=False`` skips the image columns (much faster)."""
        if not 0 <= episode < len(self.episodes):
            raise IndexError(f"episode {episode} is out of range; the dataset has {len(self.episodes)} episodes")
        ep = self.episodes[episode]
        if self.version == V3:
            return self._frames_v3(ep, images)
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

    def _frames_v3(self, ep: Episode, images: bool) -> EpisodeFrames:
        where = self._where[ep.index]
        path = data_path(self.root, *where.data)
        in_parquet = [c for c in self.camera_names if c not in self.schema.video] if images else []
        table = self._data(path, [*[image_key(c) for c in in_parquet], STATE, ACTION])
        # The file's first row is its first episode's: offsets follow from the global indices.
        first = min(w.from_index for w in self._where if w.data == where.data)
        rows = table.slice(where.from_index - first, ep.length)
        if rows.num_rows != ep.length:
            raise DatasetError(f"{path} has {rows.num_rows} frames for episode {ep.index}, but meta/episodes says "
                               f"{ep.length}; the data file was changed outside the writer")
        recorded = (scalars(rows, RECORDED_TIME) if RECORDED_TIME in rows.column_names
                    else np.arange(ep.length, dtype=np.float32) / np.float32(self.fps))
        frames = {c: image_bytes(rows, image_key(c)) for c in in_parquet}
        if images:
            for cam, (chunk, file, start, _) in where.videos.items():
                frames[cam] = ClipFrames(self._clips, video_path(self.root, cam, chunk, file), start, self.fps,
                                         ep.length)
        return EpisodeFrames(index=ep.index, task=ep.task, state=vectors(rows, STATE), action=vectors(rows, ACTION),
                             timestamp=recorded, images=frames)

    def _data(self, path: Path, columns: list[str]):
        """The data file's columns, kept for the next episode of the same file. The recorded time
        is read where the file has it (LeRobot's own files do not)."""
        if self._table is not None and self._table[0] == path and set(columns) <= set(self._table[1]):
            return self._table[2]
        names = set(read_schema_names(path))
        table = read_data(path, [*columns, *([RECORDED_TIME] if RECORDED_TIME in names else [])])
        self._table = (path, columns, table)
        return table


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


def read_schema_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq
    try:
        return pq.read_schema(path).names
    except FileNotFoundError:
        raise DatasetError(f"data file {path} is missing; it is named in meta/episodes") from None


def _read_json(root: Path, rel: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise DatasetError(f"no dataset at {root}: {rel} is missing; expected a dataset written by DatasetWriter "
                           "(LeRobot v3.0 or v2.1 layout)")
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
