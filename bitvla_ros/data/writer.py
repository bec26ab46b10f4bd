"""DatasetWriterV21: records episodes into a LeRobot v2.1 dataset, one episode at a time, atomically.

(DatasetWriter, in v3.py, writes the v3.0 layout and is the default; it shares the frame checks here.)

A crash (even kill -9) at any moment loses at most the episode in progress:
- frames are held in memory (images already encoded, so it stays small) until save_episode();
- the episode file is written under a temp name, fsynced, then renamed into place;
- each meta file is replaced the same way, never appended to;
- on open, leftover temp files are removed and meta is rebuilt from the episode files, so an
  episode whose file landed just before a crash is adopted.

A failed save (full disk, lost permissions) raises DatasetWriteError and leaves finished episodes
alone; the episode stays in memory, so save_episode() can be retried, or discard_episode() called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bitvla_ros.data import fs
from bitvla_ros.data.episode_file import episode_table, write_episode_file
from bitvla_ros.data.images import check_format, encode_image
from bitvla_ros.data.layout import INFO, DatasetError, Schema, episode_path
from bitvla_ros.data.meta import (DatasetState, EpisodeRecord, episode_files, episode_stats, listed_episodes,
                                  state_from_files, write_meta)
from bitvla_ros.data.stats import check_action_mask


@dataclass
class _Episode:
    instruction: str
    images: dict[str, list[bytes]]
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # image shapes fixed by this episode's first frame


class DatasetWriterV21:
    def __init__(self, root: str | Path, fps: float, camera_names: Sequence[str], state_names: Sequence[str],
                 action_names: Sequence[str], robot_type: str = "", image_format: str = "jpeg",
                 jpeg_quality: int = 95, action_mask: Sequence[bool] | None = None, dataset_name: str | None = None):
        """Open (or create) the dataset at ``root``; an existing one is appended to.

        ``action_mask`` marks the action dimensions that training normalizes (False for a 0/1
        gripper); None means all. ``dataset_name`` is the key in dataset_statistics.json (the
        model's unnorm key); None means the folder name. For an existing dataset both default to
        what it was recorded with, and the features must match.
        """
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps is {fps!r}; expected a positive number of frames per second")
        schema = Schema(fps=fps, camera_names=_names(camera_names, "camera_names"),
                        state_names=_names(state_names, "state_names"),
                        action_names=_names(action_names, "action_names"), robot_type=str(robot_type or ""))
        if action_mask is not None:
            action_mask = check_action_mask(action_mask, len(schema.action_names))
        self.root = Path(root)
        self._format = check_format(image_format, jpeg_quality)
        self._quality = int(jpeg_quality)
        self._episode: _Episode | None = None
        self._landed: Path | None = None  # this episode's file, in place while its meta update failed
        fs.make_dirs(self.root)
        self._lock = fs.WriterLock(self.root)
        try:
            self._state = self._open(schema, dataset_name, action_mask)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, schema: Schema, name: str | None, mask: list[bool] | None) -> DatasetState:
        root = self.root
        fs.remove_partials(root)
        files = episode_files(root)
        if not files and not (root / INFO).exists():
            strangers = [p.name for p in root.iterdir() if p.name != fs.LOCK]
            if strangers:
                raise DatasetError(f"{root} is not empty ({', '.join(sorted(strangers)[:5])}) and holds no dataset "
                                   "(no meta/info.json); choose a new or empty folder as the dataset root")
        missing = [i for i in listed_episodes(root) if i >= len(files)]
        if missing:
            raise DatasetError(f"meta/episodes.jsonl lists episodes {missing}, but their files under {root}/data "
                               "are missing; restore them, or call bitvla_ros.data.rebuild_meta(root) to drop "
                               "them from meta")
        default_mask = mask or [True] * len(schema.action_names)
        state = state_from_files(root, files, DatasetState(schema, name or root.name, default_mask))
        if files:
            check_append(root, schema, name, mask, state)
        write_meta(root, state)  # rewrites only what differs: nothing, unless a crash cut the last save short
        return state

    # --- state -----------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self._episode is not None

    @property
    def num_episodes(self) -> int:
        return len(self._state.episodes)

    @property
    def num_frames(self) -> int:
        return self._state.total_frames

    @property
    def frames_in_episode(self) -> int:
        return 0 if self._episode is None else len(self._episode.states)

    # --- recording -------------------------------------------------------------------------------

    def start_episode(self, instruction: str) -> None:
        if not self._lock.held:
            raise RuntimeError(f"this writer of {self.root} is closed; open a new DatasetWriter to record more")
        if self._episode is not None:
            raise RuntimeError("an episode is already in progress; call save_episode() or discard_episode() first")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"the instruction is {instruction!r}; expected the task in words, "
                             "e.g. 'put the bowl on the plate'")
        self._episode = _Episode(instruction.strip(), {cam: [] for cam in self._state.schema.camera_names})

    def add_frame(self, images: Mapping[str, np.ndarray], state, action, timestamp: float | None = None) -> None:
        """Append one frame: HxWx3 uint8 RGB per camera, the robot state and the commanded action.

        Everything is checked before anything is stored, so a refused frame leaves the episode as it was.
        """
        ep = self._require_episode("add_frame")
        schema = self._state.schema
        s = _vector(state, "state", schema.state_names)
        a = _vector(action, "action", schema.action_names)
        if timestamp is None:
            timestamp = len(ep.states) / schema.fps
        elif not (isinstance(timestamp, (int, float, np.number)) and math.isfinite(timestamp)):
            raise ValueError(f"timestamp is {timestamp!r}; expected seconds since the episode start, or None")
        self._check_images(images, ep)
        self._store_images(ep, images)
        for cam in schema.camera_names:
            ep.shapes.setdefault(cam, list(images[cam].shape))
        ep.states.append(s)
        ep.actions.append(a)
        ep.timestamps.append(float(timestamp))

    def _store_images(self, ep: _Episode, images: Mapping[str, np.ndarray]) -> None:
        """Keep the frame's images (encoded, so an episode in memory stays small)."""
        encoded = {cam: encode_image(images[cam], self._format, self._quality) for cam in self._state.schema.camera_names}
        for cam, data in encoded.items():
            ep.images[cam].append(data)

    def _check_images(self, images: Mapping[str, np.ndarray], ep: _Episode) -> None:
        cams = self._state.schema.camera_names
        if not isinstance(images, Mapping) or set(images) != set(cams):
            found = sorted(images) if isinstance(images, Mapping) else type(images).__name__
            raise ValueError(f"images must be a dict with one image per camera {cams}; got {found}")
        known = {**self._state.schema.image_shapes, **ep.shapes}
        for cam in cams:
            im = images[cam]
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3 \
                    or 0 in im.shape:
                what = f"shape {im.shape}, dtype {im.dtype}" if isinstance(im, np.ndarray) else type(im).__name__
                raise ValueError(f"camera {cam!r}: got {what}; expected an HxWx3 uint8 RGB image")
            if cam in known and list(im.shape) != list(known[cam]):
                raise ValueError(f"camera {cam!r}: image shape {im.shape}, but this dataset's {cam!r} images are "
                                 f"{tuple(known[cam])}; resize to that, or record into a new dataset")

    def save_episode(self) -> int:
        """Write the episode in progress; returns its episode index.

        Raises DatasetWriteError if the disk refuses (the episode stays in memory: retry or discard).
        """
        ep = self._require_episode("save_episode")
        if not ep.states:
            raise ValueError("the episode has no frames; add frames with add_frame() or call discard_episode()")
        old = self._state
        index, first, task_index = len(old.episodes), old.total_frames, old.task_index(ep.instruction)
        states, actions = np.stack(ep.states), np.stack(ep.actions)
        timestamps = np.asarray(ep.timestamps, np.float32)
        schema = replace(old.schema, image_shapes={**old.schema.image_shapes, **ep.shapes})
        extra = {"episode_index": index, "task": ep.instruction, "dataset_name": old.dataset_name,
                 "action_mask": old.action_mask}
        table = episode_table(schema, extra, first, task_index, ep.images, states, actions, timestamps)
        path = episode_path(self.root, index)
        fs.make_dirs(path.parent)
        fs.write_atomic(path, lambda f: write_episode_file(f, table))
        self._landed = path
        stats = episode_stats(states, actions, timestamps, index, first, task_index)
        new = replace(old, schema=schema).with_episode(EpisodeRecord(index, ep.instruction, len(states), stats),
                                                       states, actions)
        write_meta(self.root, new)
        self._state, self._episode, self._landed = new, None, None
        return index

    def discard_episode(self) -> None:
        """Drop the episode in progress (and its file, if a failed save had already put it in place)."""
        self._require_episode("discard_episode")
        self._episode = None
        if self._landed is not None:
            landed, self._landed = self._landed, None
            try:
                landed.unlink(missing_ok=True)
            except OSError as e:
                raise fs.DatasetWriteError(landed, e, "remove") from e
            write_meta(self.root, self._state)

    def close(self) -> None:
        """Release the dataset; an unsaved episode is dropped, as a crash would drop it."""
        try:
            if self._episode is not None:
                self.discard_episode()
        finally:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def _require_episode(self, what: str) -> _Episode:
        if self._episode is None:
            raise RuntimeError(f"{what}() needs an episode in progress; call start_episode(instruction) first")
        return self._episode


def check_append(root: Path, schema: Schema, name: str | None, mask: list[bool] | None, state: DatasetState) -> None:
    """Refuse to append with other features, name or mask than the dataset on disk has."""
    problems = schema.differences(state.schema)
    if name is not None and name != state.dataset_name:
        problems.append(f"dataset_name: {state.dataset_name!r} on disk, {name!r} here")
    if mask is not None and mask != state.action_mask:
        problems.append(f"action_mask: {state.action_mask} on disk, {mask} here")
    if problems:
        raise DatasetError(f"cannot append to {root}, it was recorded differently: {'; '.join(problems)}. "
                           "Use the same settings (None keeps the dataset's name and mask), or a new root")


def _names(names: Sequence[str], what: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{what} is {names!r}; expected a non-empty list of distinct, non-empty names")
    return names


def _vector(value, what: str, names: list[str]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {arr.dtype}; expected numbers, one per name in {names}")
    if arr.shape != (len(names),):
        raise ValueError(f"{what} has shape {arr.shape}; expected ({len(names)},), one value per name in {names}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    bad = [n for n, ok in zip(names, np.isfinite(arr)) if not ok]
    if bad:
        raise ValueError(f"{what} is not finite (or beyond float32 range) for {bad}: {np.asarray(value).tolist()}; "
                         "check the source of the robot's readings before recording")
    return arr
