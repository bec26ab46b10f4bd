"""The meta/ files and dataset_statistics.json: a pure function of the episode parquet files.

Every episode file carries its own record (see episode_file.py), so meta can always be rebuilt
from the data files alone. That is how a writer recovers after a crash between an episode file's
rename and the meta update: it rebuilds, and rewrites the meta files that differ.

Meta files are written in an order that a reader can follow at any moment: tasks first, then the
per-episode stats, then episodes.jsonl (the list a reader goes by), then the aggregates and
info.json's totals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bitvla_ros.data import fs
from bitvla_ros.data.episode_file import read_episode_columns, read_episode_meta, scalars, vectors
from bitvla_ros.data.layout import (ACTION, CHUNKS_SIZE, CODEBASE_VERSION, DATA_PATH, EPISODES, EPISODES_STATS,
                                    INFO, META, STATE, STATISTICS, STATS, TASKS, DatasetError, Schema)
from bitvla_ros.data.stats import aggregate_stats, feature_stats, statistics_entry


@dataclass(frozen=True)
class EpisodeRecord:
    index: int
    task: str
    length: int
    stats: dict  # LeRobot per-feature stats of this episode


@dataclass(frozen=True)
class DatasetState:
    """Everything the meta files say, plus every frame's state and action for the quantiles."""

    schema: Schema
    dataset_name: str
    action_mask: list[bool] | None
    episodes: tuple[EpisodeRecord, ...] = ()
    states: tuple[np.ndarray, ...] = ()
    actions: tuple[np.ndarray, ...] = ()
    tasks: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(e.task for e in self.episodes)))

    @property
    def total_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def task_index(self, task: str) -> int:
        return self.tasks.index(task) if task in self.tasks else len(self.tasks)

    def with_episode(self, record: EpisodeRecord, state: np.ndarray, action: np.ndarray) -> "DatasetState":
        return replace(self, episodes=(*self.episodes, record), states=(*self.states, state),
                       actions=(*self.actions, action))


def episode_stats(state: np.ndarray, action: np.ndarray, timestamp: np.ndarray, episode_index: int,
                  first_index: int, task_index: int) -> dict:
    n = len(state)
    return {STATE: feature_stats(state), ACTION: feature_stats(action), "timestamp": feature_stats(timestamp),
            "frame_index": feature_stats(np.arange(n)), "episode_index": feature_stats(np.full(n, episode_index)),
            "index": feature_stats(np.arange(first_index, first_index + n)),
            "task_index": feature_stats(np.full(n, task_index))}


# --- rendering and writing ----------------------------------------------------------------------

def render(state: DatasetState) -> list[tuple[str, str]]:
    """(relative path, text) of every meta file, in the order they must be written."""
    n = len(state.episodes)
    jsonl = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)  # noqa: E731
    files = [
        (TASKS, jsonl({"task_index": i, "task": t} for i, t in enumerate(state.tasks))),
        (EPISODES_STATS, jsonl({"episode_index": e.index, "stats": e.stats} for e in state.episodes)),
        (EPISODES, jsonl({"episode_index": e.index, "tasks": [e.task], "length": e.length} for e in state.episodes)),
        (STATS, json.dumps(aggregate_stats([e.stats for e in state.episodes]), indent=4)),
    ]
    if n:
        entry = statistics_entry(np.concatenate(state.actions), np.concatenate(state.states), n, state.action_mask)
        files.append((STATISTICS, json.dumps({state.dataset_name: entry}, indent=2)))
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": state.schema.robot_type,
        "total_episodes": n, "total_frames": state.total_frames, "total_tasks": len(state.tasks),
        "total_videos": 0, "total_chunks": math.ceil(n / CHUNKS_SIZE), "chunks_size": CHUNKS_SIZE,
        "fps": state.schema.fps, "splits": {"train": f"0:{n}"}, "data_path": DATA_PATH, "video_path": None,
        "features": state.schema.features(),
    }
    files.append((INFO, json.dumps(info, indent=4)))
    return files


def write_meta(root: Path, state: DatasetState) -> None:
    """Write the meta files whose text changed, each atomically. Raises fs.DatasetWriteError."""
    root = Path(root)
    fs.make_dirs(root / META)
    for rel, text in render(state):
        path = root / rel
        try:
            if path.read_text() == text:
                continue
        except (OSError, UnicodeDecodeError):
            pass
        fs.write_text_atomic(path, text)
    if not state.episodes and (root / STATISTICS).exists():  # left from an episode that was then discarded
        try:
            (root / STATISTICS).unlink()
        except OSError as e:
            raise fs.DatasetWriteError(root / STATISTICS, e, "remove") from e


# --- rebuilding from the data files ----------------------------------------------------------------

def episode_files(root: Path) -> list[Path]:
    """The episode parquet files, in index order; the indices must run 0..n-1 without gaps."""
    found = {}
    for path in Path(root).glob("data/chunk-*/episode_*.parquet"):
        try:
            found[int(path.stem.split("_")[1])] = path
        except ValueError:
            continue
    gaps = sorted(set(range(max(found, default=-1) + 1)) - set(found))
    if gaps:
        raise DatasetError(f"the episode files under {root}/data have gaps: episodes {gaps} are missing, up to "
                           f"episode {max(found)}; restore them, or move the episodes after them out of the dataset")
    return [found[i] for i in range(len(found))]


def listed_episodes(root: Path) -> list[int]:
    """Episode indices named in meta/episodes.jsonl (empty if there is none)."""
    path = Path(root) / EPISODES
    if not path.exists():
        return []
    return [json.loads(line)["episode_index"] for line in path.read_text().splitlines() if line.strip()]


def state_from_files(root: Path, files: list[Path], empty: DatasetState) -> DatasetState:
    """Rebuild everything from the episode files; ``empty`` gives schema/name/mask when there are none."""
    state = empty
    first = 0
    for index, path in enumerate(files):
        record = read_episode_meta(path)
        if record.get("episode_index") != index:
            raise DatasetError(f"{path} says it holds episode {record.get('episode_index')}, but its name says "
                               f"{index}; rename it or move it out of the dataset")
        schema = Schema.from_info(record, str(path))
        if index == 0:
            state = DatasetState(schema, record.get("dataset_name") or empty.dataset_name,
                                 record.get("action_mask", empty.action_mask))
        elif problems := schema.differences(state.schema):
            raise DatasetError(f"{path} does not match episode 0's features: {'; '.join(problems)}")
        table = read_episode_columns(path, [STATE, ACTION, "timestamp"])
        s, a = vectors(table, STATE), vectors(table, ACTION)
        ts = scalars(table, "timestamp")
        task = record["task"]
        stats = episode_stats(s, a, ts, index, first, state.task_index(task))
        state = state.with_episode(EpisodeRecord(index, task, len(s), stats), s, a)
        first += len(s)
    return state


def rebuild_meta(root: str | Path) -> int:
    """Rewrite meta/ and dataset_statistics.json from the episode files alone; returns the episode count.

    Use it after restoring or removing episode files by hand. Needs no writer to hold the dataset.
    A v3.0 dataset's meta/episodes is its list of finished episodes: the files are brought back to
    what it names, and the other meta files rewritten from it (as a writer does on open).
    """
    root = Path(root)
    if (root / INFO).is_file() and json.loads((root / INFO).read_text()).get("codebase_version") == "v3.0":
        from bitvla_ros.data.v3 import DatasetWriter  # v3 builds on this module

        with DatasetWriter.reopen(root) as writer:
            return writer.num_episodes
    lock = fs.WriterLock(root)
    try:
        fs.remove_partials(root)
        files = episode_files(root)
        if not files:
            if not (root / INFO).exists():
                raise DatasetError(f"{root} has neither episode files nor meta/info.json; nothing to rebuild")
            info = json.loads((root / INFO).read_text())
            empty = DatasetState(Schema.from_info(info, str(root / INFO)), root.name, None)
        else:
            empty = DatasetState(Schema(0, [], [], []), root.name, None)
        state = state_from_files(root, files, empty)
        write_meta(root, state)
        return len(state.episodes)
    finally:
        lock.release()
