"""One episode <-> one parquet file.

Columns follow LeRobot v2.1 as written by HF `datasets`: images are structs {"bytes", "path": null}
(the Image feature), vectors are fixed-size float32 lists, scalars are plain columns. The file's
schema metadata also carries everything needed to rebuild meta/ from the data files alone
(instruction, length, fps, features, the writer's statistics settings), so that an episode whose
meta update was cut short by a crash can be adopted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bitvla_ros.data.layout import ACTION, SCALARS, STATE, DatasetError, Schema, image_key

META_KEY = b"bitvla_ros"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def episode_table(schema: Schema, extra: dict, first_index: int, task_index: int,
                  images: dict[str, list[bytes]], state: np.ndarray, action: np.ndarray,
                  timestamp: np.ndarray) -> pa.Table:
    """The parquet table of one episode; ``extra`` (episode_index, task, ...) goes into its metadata."""
    n = len(state)
    episode_index = extra["episode_index"]
    columns = {}
    for cam in schema.camera_names:
        columns[image_key(cam)] = pa.StructArray.from_arrays(
            [pa.array(images[cam], pa.binary()), pa.nulls(n, pa.string())], fields=list(IMAGE_TYPE))
    columns[STATE] = vector_column(state)
    columns[ACTION] = vector_column(action)
    columns["timestamp"] = pa.array(timestamp, pa.float32())
    columns["frame_index"] = pa.array(np.arange(n), pa.int64())
    columns["episode_index"] = pa.array(np.full(n, episode_index), pa.int64())
    columns["index"] = pa.array(np.arange(first_index, first_index + n), pa.int64())
    columns["task_index"] = pa.array(np.full(n, task_index), pa.int64())
    meta = {META_KEY: json.dumps({**extra, "length": n, "task_index": task_index,
                                  "fps": schema.fps, "robot_type": schema.robot_type,
                                  "features": schema.features()}),
            b"huggingface": json.dumps({"info": {"features": hf_features(schema)}})}
    return pa.table(columns).replace_schema_metadata(meta)


def vector_column(x: np.ndarray) -> pa.Array:
    """(T, D) float32 as fixed-size lists; a 1-wide vector as a plain column (LeRobot's rule for shape (1,))."""
    x = np.ascontiguousarray(x, np.float32)
    if x.shape[1] == 1:
        return pa.array(x[:, 0])
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def hf_features(schema: Schema) -> dict:
    """The `datasets` feature spec, so that `datasets.Dataset.from_parquet` sees Image columns."""
    feats = {image_key(c): {"_type": "Image"} for c in schema.camera_names if c not in schema.video}
    for key, names in ((STATE, schema.state_names), (ACTION, schema.action_names)):
        feats[key] = ({"dtype": "float32", "_type": "Value"} if len(names) == 1 else
                      {"feature": {"dtype": "float32", "_type": "Value"}, "length": len(names), "_type": "Sequence"})
    feats.update({k: {"dtype": v, "_type": "Value"} for k, v in SCALARS.items()})
    return feats


def write_episode_file(f, table: pa.Table) -> None:
    pq.write_table(table, f)


def read_episode_meta(path: Path) -> dict:
    """The episode's own record (episode_index, task, length, fps, features, ...), from its schema only."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"{path} is not a readable parquet file ({e}); move it out of the dataset") from None
    if raw is None:
        raise DatasetError(f"{path} has no '{META_KEY.decode()}' metadata, so it was not written by "
                           "DatasetWriter; move it out of the dataset")
    return json.loads(raw)


def read_episode_columns(path: Path, columns: list[str]) -> pa.Table:
    try:
        table = pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise DatasetError(f"episode file {path} is missing; it is listed in meta/episodes.jsonl") from None
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"could not read {path} (columns {columns}): {e}") from None
    return table


def vectors(table: pa.Table, key: str) -> np.ndarray:
    """A fixed-size float list column as a (T, D) float32 array (a writable copy, unlike arrow's views)."""
    col = table.column(key).combine_chunks()
    if not pa.types.is_list(col.type) and not pa.types.is_fixed_size_list(col.type):  # a 1-wide vector
        return np.array(col.to_numpy(zero_copy_only=False), np.float32).reshape(-1, 1)
    width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else len(col[0]) if len(col) else 0
    return np.array(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, width)


def scalars(table: pa.Table, key: str, dtype=np.float32) -> np.ndarray:
    return np.array(table.column(key).to_numpy(), dtype)


def image_bytes(table: pa.Table, key: str) -> list[bytes]:
    return table.column(key).combine_chunks().field("bytes").to_pylist()
