"""The files of a LeRobot v3.0 dataset as tables: frames, episodes metadata, tasks, info.

Shared by the writer (v3.py) and the reader. Column names and file templates are LeRobot's:
an episodes row says where the episode lives (`data/chunk_index`, `data/file_index`,
`dataset_from_index`, `dataset_to_index`, per camera `videos/<key>/chunk_index|file_index|
from_timestamp|to_timestamp`) and carries its statistics flattened as `stats/<feature>/<stat>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bitvla_ros.data.episode_file import IMAGE_TYPE, hf_features, vector_column
from bitvla_ros.data.layout import (ACTION, CHUNKS_SIZE, STATE, V3, V3_DATA_PATH, V3_EPISODES_PATH,
                                    V3_TASKS, V3_VIDEO_PATH, DatasetError, Schema, image_key)

RECORDED_TIME = "recorded_time"  # seconds since the episode start when the observation was taken


@dataclass(frozen=True)
class Where:
    """Where one episode's frames and clips are."""

    data: tuple[int, int]  # (chunk_index, file_index) of its data file
    from_index: int  # global frame index of its first frame
    videos: dict[str, tuple[int, int, float, float]] = field(default_factory=dict)  # cam -> chunk, file, from, to


def chunk_file(n: int) -> tuple[int, int]:
    """The n-th file of a kind: (chunk_index, file_index), CHUNKS_SIZE files per chunk."""
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def file_number(chunk: int, file: int) -> int:
    return chunk * CHUNKS_SIZE + file


def data_path(root: Path, chunk: int, file: int) -> Path:
    return Path(root) / V3_DATA_PATH.format(chunk_index=chunk, file_index=file)


def video_path(root: Path, camera: str, chunk: int, file: int) -> Path:
    return Path(root) / V3_VIDEO_PATH.format(video_key=image_key(camera), chunk_index=chunk, file_index=file)


def episodes_path(root: Path) -> Path:
    return Path(root) / V3_EPISODES_PATH.format(chunk_index=0, file_index=0)


def features(schema: Schema) -> dict:
    return {**schema.features(), RECORDED_TIME: {"dtype": "float32", "shape": [1], "names": None}}


# --- frames ------------------------------------------------------------------------------------

OWN = b"bitvla_ros"  # data files' schema metadata: {dataset_name, action_mask} (LeRobot ignores it)


def frames_table(schema: Schema, episode_index: int, first_index: int, task_index: int, images: dict[str, list[bytes]],
                 state: np.ndarray, action: np.ndarray, recorded: np.ndarray, own: dict) -> pa.Table:
    n = len(state)
    columns = {}
    for cam in schema.camera_names:
        if cam not in schema.video:
            columns[image_key(cam)] = pa.StructArray.from_arrays(
                [pa.array(images[cam], pa.binary()), pa.nulls(n, pa.string())], fields=list(IMAGE_TYPE))
    columns[STATE] = vector_column(state)
    columns[ACTION] = vector_column(action)
    columns["timestamp"] = pa.array(np.arange(n) / schema.fps, pa.float32())  # the video clock, as LeRobot's
    columns["frame_index"] = pa.array(np.arange(n), pa.int64())
    columns["episode_index"] = pa.array(np.full(n, episode_index), pa.int64())
    columns["index"] = pa.array(np.arange(first_index, first_index + n), pa.int64())
    columns["task_index"] = pa.array(np.full(n, task_index), pa.int64())
    columns[RECORDED_TIME] = pa.array(recorded, pa.float32())
    return pa.table(columns).replace_schema_metadata({b"huggingface": hf_metadata(schema), OWN: json.dumps(own)})


def read_own(path: Path) -> dict:
    """The {dataset_name, action_mask} a data file carries ({} for files not written here)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(OWN)
    except (OSError, pa.ArrowException):
        return {}
    return json.loads(raw) if raw else {}


def hf_metadata(schema: Schema) -> str:
    feats = {**hf_features(schema), RECORDED_TIME: {"dtype": "float32", "_type": "Value"}}
    return json.dumps({"info": {"features": feats}})


def read_data(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise DatasetError(f"data file {path} is missing; it is named in meta/episodes") from None
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"could not read {path} (columns {columns}): {e}") from None


# --- episodes metadata -------------------------------------------------------------------------

def episodes_table(rows: list[dict]) -> pa.Table:
    """rows: {episode_index, task, length, where: Where, stats: {feature: {stat: list}}}."""
    cols: dict[str, list] = {"episode_index": [], "tasks": [], "length": [], "data/chunk_index": [],
                             "data/file_index": [], "dataset_from_index": [], "dataset_to_index": []}
    cams = sorted(rows[0]["where"].videos) if rows else []
    for cam in cams:
        for part in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
            cols[f"videos/{image_key(cam)}/{part}"] = []
    cols["meta/episodes/chunk_index"], cols["meta/episodes/file_index"] = [], []
    for r in rows:
        w: Where = r["where"]
        cols["episode_index"].append(r["episode_index"])
        cols["tasks"].append([r["task"]])
        cols["length"].append(r["length"])
        cols["data/chunk_index"].append(w.data[0])
        cols["data/file_index"].append(w.data[1])
        cols["dataset_from_index"].append(w.from_index)
        cols["dataset_to_index"].append(w.from_index + r["length"])
        for cam in cams:
            for part, value in zip(("chunk_index", "file_index", "from_timestamp", "to_timestamp"), w.videos[cam]):
                cols[f"videos/{image_key(cam)}/{part}"].append(value)
        cols["meta/episodes/chunk_index"].append(0)
        cols["meta/episodes/file_index"].append(0)
        for feat, stats in r["stats"].items():
            for stat, value in stats.items():
                cols.setdefault(f"stats/{feat}/{stat}", []).append(value)
    types = {"tasks": pa.list_(pa.string())}
    arrays = {}
    for name, values in cols.items():
        if name.endswith("_timestamp"):
            arrays[name] = pa.array(values, pa.float64())
        elif name.startswith("stats/"):  # lists as LeRobot stores them (image stats nested, (3, 1, 1))
            arrays[name] = pa.array([np.asarray(v, np.int64 if name.endswith("/count") else np.float64).tolist()
                                     for v in values])
        else:
            arrays[name] = pa.array(values, types.get(name, pa.int64()))
    return pa.table(arrays) if rows else pa.table({k: pa.array([], types.get(k, pa.int64())) for k in cols})


def read_episodes(root: Path) -> list[dict]:
    """The committed episodes, in order: {episode_index, task, length, where, shapes of stats}."""
    paths = sorted(Path(root).glob("meta/episodes/chunk-*/file-*.parquet"))
    rows: list[dict] = []
    for path in paths:
        try:
            table = pq.read_table(path, columns=None)
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"could not read {path}: {e}; restore it from a backup") from None
        names = table.column_names
        cams = sorted({n.split("/")[1] for n in names if n.startswith("videos/")})
        data = table.to_pydict()
        for i in range(table.num_rows):
            videos = {cam[len("observation.images."):]: tuple(data[f"videos/{cam}/{p}"][i] for p in
                                                            ("chunk_index", "file_index", "from_timestamp",
                                                             "to_timestamp"))
                      for cam in cams}
            stats: dict = {}
            for n in names:
                if n.startswith("stats/"):
                    _, feat, stat = n.split("/")  # feature names hold no '/' (LeRobot's rule)
                    stats.setdefault(feat, {})[stat] = data[n][i]
            tasks = data["tasks"][i]
            rows.append({"episode_index": data["episode_index"][i], "task": tasks[0] if tasks else None,
                         "length": data["length"][i], "stats": stats,
                         "where": Where((data["data/chunk_index"][i], data["data/file_index"][i]),
                                        data["dataset_from_index"][i], videos)})
    for position, r in enumerate(rows):
        if r["episode_index"] != position or not r["task"] or r["length"] < 1:
            raise DatasetError(f"{Path(root) / 'meta/episodes'} row {position} is episode {r['episode_index']} of "
                               f"length {r['length']} with task {r['task']!r}; expected episode {position}, a task "
                               "and a positive length")
    return rows


# --- tasks -------------------------------------------------------------------------------------

def tasks_table(tasks: list[str]) -> pa.Table:
    """task_index per task, with the task as the pandas index (LeRobot reads it with pandas)."""
    pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())}
                    ).replace_schema_metadata({b"pandas": json.dumps(pandas_meta)})


def read_tasks(root: Path) -> list[str]:
    path = Path(root) / V3_TASKS
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing; open the dataset with a DatasetWriter to rebuild meta/") from None
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"could not read {path}: {e}") from None
    if "task" not in table.column_names:  # written by pandas with an unnamed index
        table = table.rename_columns(["task" if c == "__index_level_0__" else c for c in table.column_names])
    pairs = sorted(zip(table.column("task_index").to_pylist(), table.column("task").to_pylist()))
    return [t for _, t in pairs]


# --- info --------------------------------------------------------------------------------------

def info_dict(schema: Schema, episodes: int, frames: int, tasks: int, data_mb: float, video_mb: float) -> dict:
    """meta/info.json, with LeRobot's fields only (it warns about others); the statistics key and
    action mask live in dataset_statistics.json and in the data files' schema metadata."""
    fps = int(schema.fps) if float(schema.fps).is_integer() else schema.fps
    return {
        "codebase_version": V3, "robot_type": schema.robot_type or None,
        "total_episodes": episodes, "total_frames": frames, "total_tasks": tasks,
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": data_mb, "video_files_size_in_mb": video_mb,
        "fps": fps, "splits": {"train": f"0:{episodes}"}, "data_path": V3_DATA_PATH,
        "video_path": V3_VIDEO_PATH if schema.video else None, "features": features(schema),
    }

