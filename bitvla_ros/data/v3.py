"""DatasetWriter: records episodes into a LeRobot v3.0 dataset (the default), episode-atomically.

v3.0 puts several episodes in one data file and lists them in meta/episodes; a crash must still
lose at most the episode in progress. How:

- While an episode is recorded, each camera's frames stream into an MP4 of the episode's own
  under a temp name (or, without video, are held in memory as JPEG/PNG bytes); nothing else is
  touched.
- save_episode(): each camera's current video file is rewritten whole as its finished episodes'
  frames (copied, not re-encoded) plus the new clip, under a temp name, and renamed over the old
  one; then the current data file likewise with its finished episodes' rows plus the new ones. A
  new file is started once the current one reaches `video_file_mb` / `data_file_mb`. Rows and
  frames already in a file never move.
- The commit point is the rename of meta/episodes/chunk-000/file-000.parquet, the list of finished
  episodes with where each one's rows and clips are. Readers go by that list only and ignore rows
  and clips it does not name; tasks.parquet is written before it (a superset is harmless), stats,
  dataset_statistics.json and info.json after it (all derived from the list).
- On open, a writer deletes temp files, truncates data files back to the rows the list names,
  deletes video and data files it does not name, and rewrites the derived meta files. Frames past
  the end of a video file's last named episode are dropped when the next clip is appended. So a
  kill -9 at any moment leaves every finished episode loadable, by our reader and by LeRobot, and
  the episode in progress is gone (also if its rows had landed but the list had not been renamed).

A failed save (full disk) raises DatasetWriteError; the episode stays in memory (its clips stay on
disk) so save_episode() can be retried, or discard_episode() called.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bitvla_ros.data import fs
from bitvla_ros.data.episode_file import vectors
from bitvla_ros.data.layout import (ACTION, DATA_FILE_MB, INFO, STATE, STATISTICS, STATS, V3, V3_TASKS,
                                    VIDEO_FILE_MB, DatasetError, Schema)
from bitvla_ros.data.meta import DatasetState, EpisodeRecord, episode_stats
from bitvla_ros.data.stats import aggregate_stats, feature_stats, statistics_entry
from bitvla_ros.data.v3_files import (RECORDED_TIME, Where, chunk_file, data_path, episodes_path, episodes_table,
                                      file_number, frames_table, info_dict, read_data, read_episodes, read_own, tasks_table,
                                      video_path)
from bitvla_ros.data.video import (DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_GOP, ClipEncoder, append_clip,
                                   check_video_settings, same_stream, video_info)
from bitvla_ros.data.writer import DatasetWriterV21, _Episode, check_append


@dataclass
class _Recording(_Episode):
    encoders: dict = field(default_factory=dict)  # camera -> ClipEncoder writing the temp file
    clips: dict = field(default_factory=dict)  # camera -> clip already renamed into place (by a failed save)
    pixels: dict = field(default_factory=dict)  # camera -> [frames, sum, sum of squares, min, max] per channel


class DatasetWriter(DatasetWriterV21):
    def __init__(self, root: str | Path, fps: float, camera_names: Sequence[str], state_names: Sequence[str],
                 action_names: Sequence[str], robot_type: str = "", video: bool = True,
                 video_codec: str = DEFAULT_CODEC, video_crf: int = DEFAULT_CRF, video_gop: int = DEFAULT_GOP,
                 image_format: str = "jpeg", jpeg_quality: int = 95, action_mask: Sequence[bool] | None = None,
                 dataset_name: str | None = None, data_file_mb: float | None = None,
                 video_file_mb: float | None = None):
        """Open (or create) the v3.0 dataset at ``root``; an existing one is appended to.

        ``video`` stores cameras as MP4 (H.264 by default; ``video_crf`` quality, ``video_gop``
        keyframe interval), else as ``image_format`` images inside the data files. The other
        arguments are DatasetWriterV21's; ``data_file_mb`` is the size at which a new data file starts
        (None: the dataset's own setting, else LeRobot's 100 MB); ``video_file_mb`` the same for the
        video files (LeRobot's 500 MB).
        """
        check_video_settings(video_codec, video_crf, video_gop)
        if data_file_mb is not None and not (isinstance(data_file_mb, (int, float)) and data_file_mb > 0):
            raise ValueError(f"data_file_mb is {data_file_mb!r}; expected a positive size in MB (LeRobot: 100)")
        self._video, self._codec, self._crf, self._gop = bool(video), video_codec, int(video_crf), int(video_gop)
        self._data_mb, self._video_mb = data_file_mb, video_file_mb
        self._where: list[Where] = []
        super().__init__(root, fps, camera_names, state_names, action_names, robot_type, image_format, jpeg_quality,
                         action_mask, dataset_name)

    @classmethod
    def reopen(cls, root: str | Path, **kwargs) -> "DatasetWriter":
        """A writer for the existing dataset at ``root``, with the features it was recorded with."""
        info_path = Path(root) / INFO
        if not info_path.is_file():
            raise DatasetError(f"no dataset at {root} ({INFO} is missing)")
        info = json.loads(info_path.read_text())
        schema = Schema.from_info(info, str(info_path))
        codecs = {v.get("video.codec") for v in schema.video.values()} - {None}
        if len(codecs) == 1 and "video_codec" not in kwargs:  # go on in the dataset's codec
            kwargs["video_codec"] = {"h264": "libx264", "av1": "libsvtav1"}.get(*codecs, *codecs)
        return cls(root, schema.fps, schema.camera_names, schema.state_names, schema.action_names,
                   schema.robot_type, video=bool(schema.video), **kwargs)

    # --- opening and recovery -------------------------------------------------------------------

    def _open(self, schema: Schema, name: str | None, mask: list[bool] | None) -> DatasetState:
        root = self.root
        schema = replace(schema, video={c: {} for c in schema.camera_names} if self._video else {})
        fs.remove_partials(root)
        default = DatasetState(schema, name or root.name, mask or [True] * len(schema.action_names))
        if not (root / INFO).exists():
            strangers = [p.name for p in root.iterdir() if p.name != fs.LOCK]
            if strangers:
                raise DatasetError(f"{root} is not empty ({', '.join(sorted(strangers)[:5])}) and holds no dataset "
                                   "(no meta/info.json); choose a new or empty folder as the dataset root")
            state, where = default, []
        else:
            info = json.loads((root / INFO).read_text())
            version = info.get("codebase_version")
            if version != V3:
                raise DatasetError(f"{root} holds a LeRobot {version} dataset; convert it first with `bitvla dataset "
                                   f"convert {root} NEW_ROOT` and record into NEW_ROOT (or append with "
                                   "DatasetWriterV21)")
            state, where = self._load(info)
            state = replace(state, dataset_name=state.dataset_name or default.dataset_name,
                            action_mask=state.action_mask or default.action_mask)
            if self._data_mb is None:
                self._data_mb = info.get("data_files_size_in_mb") or DATA_FILE_MB
            if self._video_mb is None:
                self._video_mb = info.get("video_files_size_in_mb") or VIDEO_FILE_MB
            if not state.episodes:
                state, where = default, []
            else:
                check_append(root, schema, name, mask, state)
        if self._data_mb is None:
            self._data_mb = DATA_FILE_MB
        if self._video_mb is None:
            self._video_mb = VIDEO_FILE_MB
        self._where = where
        self._restore_files(state, where)
        self._write_meta(state, where)
        return state

    def _load(self, info: dict) -> tuple[DatasetState, list[Where]]:
        """The committed episodes, with every frame's state and action (for the quantiles)."""
        root = self.root
        schema = Schema.from_info(info, str(root / INFO))
        rows = read_episodes(root)
        own = read_own(data_path(root, *rows[0]["where"].data)) if rows else {}
        name, mask = own.get("dataset_name"), own.get("action_mask")
        if name is None and (root / STATISTICS).is_file():  # a LeRobot-written data file; {name: {"action": ...}}
            name, entry = next(iter(json.loads((root / STATISTICS).read_text()).items()))
            mask = entry["action"].get("mask")
        state = DatasetState(schema, name, mask)  # None: the writer's own
        where, tables = [], {}
        for r in rows:
            w: Where = r["where"]
            if w.data not in tables:
                tables[w.data] = (read_data(data_path(root, *w.data), [STATE, ACTION]), w.from_index)
            table, first = tables[w.data]
            rows = table.slice(w.from_index - first, r["length"])
            if rows.num_rows != r["length"]:
                raise DatasetError(f"{data_path(root, *w.data)} holds fewer frames than meta/episodes says for "
                                   f"episode {r['episode_index']}; the data file was changed outside the writer")
            state = state.with_episode(EpisodeRecord(r["episode_index"], r["task"], r["length"], r["stats"]),
                                       vectors(rows, STATE), vectors(rows, ACTION))
            where.append(w)
        return state, where

    def _restore_files(self, state: DatasetState, where: list[Where]) -> None:
        """Make the files hold exactly what meta/episodes names: truncate data files, drop strays."""
        root = self.root
        rows: dict[tuple[int, int], int] = {}
        for w, e in zip(where, state.episodes):
            rows[w.data] = rows.get(w.data, 0) + e.length
        for path in root.glob("data/chunk-*/file-*.parquet"):
            key = (int(path.parent.name[6:]), int(path.stem[5:]))
            if key not in rows:
                _unlink(path)
                continue
            n = pq.read_metadata(path).num_rows
            if n > rows[key]:  # rows of an episode whose commit did not happen
                keep = read_data(path).slice(0, rows[key])
                fs.write_atomic(path, lambda f: pq.write_table(keep, f))
            elif n < rows[key]:
                raise DatasetError(f"{path} holds {n} frames, but meta/episodes names {rows[key]}; the data file "
                                   "was changed outside the writer: restore it from a backup")
        named = {video_path(root, cam, c, f) for w in where for cam, (c, f, _, _) in w.videos.items()}
        for path in root.glob("videos/*/chunk-*/file-*.mp4"):
            if path not in named:
                _unlink(path)

    # --- recording ---------------------------------------------------------------------------------

    def start_episode(self, instruction: str) -> None:
        super().start_episode(instruction)
        ep = self._episode
        self._episode = _Recording(ep.instruction, ep.images)

    def _store_images(self, ep: _Recording, images: Mapping[str, np.ndarray]) -> None:
        schema = self._state.schema
        index = len(self._state.episodes)
        for cam in schema.camera_names:
            rgb = images[cam]
            _accumulate(ep.pixels, cam, rgb)
            if cam not in schema.video:
                ep.images[cam].append(self._encode(rgb))
                continue
            if cam not in ep.encoders:
                path = _partial(video_path(self.root, cam, *chunk_file(index)))
                fs.make_dirs(path.parent)
                try:
                    ep.encoders[cam] = ClipEncoder(path, schema.fps, rgb.shape, self._codec, self._crf, self._gop)
                except OSError as e:
                    raise fs.DatasetWriteError(path, e, "start the video") from e
            ep.encoders[cam].add(rgb)

    def _encode(self, rgb: np.ndarray) -> bytes:
        from bitvla_ros.data.images import encode_image
        return encode_image(rgb, self._format, self._quality)

    def save_episode(self) -> int:
        """Write the episode in progress; returns its episode index. See the module docstring for how."""
        ep = self._require_episode("save_episode")
        if not ep.states:
            raise ValueError("the episode has no frames; add frames with add_frame() or call discard_episode()")
        old = self._state
        index, first, task_index = len(old.episodes), old.total_frames, old.task_index(ep.instruction)
        n = len(ep.states)
        states, actions = np.stack(ep.states), np.stack(ep.actions)
        recorded = np.asarray(ep.timestamps, np.float32)
        videos, infos = {}, {}
        for cam, enc in ep.encoders.items():
            if cam not in ep.clips:
                enc.close()
                ep.clips[cam] = self._place_clip(cam, enc.path)
            chunk, file, start, _, _ = ep.clips[cam]
            videos[cam] = (chunk, file, start, start + n / old.schema.fps)
            infos[cam] = video_info(enc.shape, old.schema.fps, self._codec, enc.pix_fmt)
        schema = replace(old.schema, image_shapes={**old.schema.image_shapes, **ep.shapes},
                         video={**old.schema.video, **infos})

        target, kept = self._data_target()
        table = frames_table(schema, index, first, task_index, ep.images, states, actions, recorded,
                             {"dataset_name": old.dataset_name, "action_mask": old.action_mask})
        path = data_path(self.root, *target)
        if kept:
            table = pa.concat_tables([read_data(path).slice(0, kept).replace_schema_metadata(table.schema.metadata),
                                      table])
        fs.make_dirs(path.parent)
        fs.write_atomic(path, lambda f: pq.write_table(table, f))
        self._landed = path

        stats = episode_stats(states, actions, np.arange(n) / schema.fps, index, first, task_index)
        stats[RECORDED_TIME] = feature_stats(recorded)
        stats.update({f"observation.images.{cam}": _pixel_stats(acc) for cam, acc in ep.pixels.items()})
        new = replace(old, schema=schema).with_episode(EpisodeRecord(index, ep.instruction, n, stats), states, actions)
        where = [*self._where, Where(target, first, videos)]
        self._write_meta(new, where)
        self._state, self._where, self._episode, self._landed = new, where, None, None
        return index

    def _place_clip(self, cam: str, clip: Path) -> tuple[int, int, float, Path, bool]:
        """Put the episode's clip at the end of the camera's current video file (rewritten whole and
        renamed, like a data file), or into a new file once that one reaches `video_file_mb` or was
        encoded differently. Returns (chunk, file, start time in the file, path, whether new)."""
        last = self._where[-1].videos.get(cam) if self._where else None
        number = 0
        if last is not None:
            chunk, file, _, end = last
            path = video_path(self.root, cam, chunk, file)
            number = file_number(chunk, file) + 1
            try:
                fits = path.stat().st_size < self._video_mb * 2 ** 20 and same_stream(path, clip)
            except OSError:
                fits = False
            if fits:
                tmp = path.with_name(path.name + ".append" + fs.PARTIAL)
                try:
                    append_clip(path, clip, end, tmp)
                    os.replace(tmp, path)
                except OSError as e:
                    _unlink(tmp)
                    raise fs.DatasetWriteError(path, e) from e
                fs.fsync_dir(path.parent)
                _unlink(clip)
                return chunk, file, end, path, False
        final = video_path(self.root, cam, *chunk_file(number))
        fs.make_dirs(final.parent)
        try:
            os.replace(clip, final)
        except OSError as e:
            raise fs.DatasetWriteError(final, e) from e
        fs.fsync_dir(final.parent)
        return (*chunk_file(number), 0.0, final, True)

    def _data_target(self) -> tuple[tuple[int, int], int]:
        """The data file the next episode goes to, and how many finished rows it holds."""
        if not self._where:
            return (0, 0), 0
        last = self._where[-1].data
        rows = sum(e.length for w, e in zip(self._where, self._state.episodes) if w.data == last)
        try:
            size = data_path(self.root, *last).stat().st_size
        except OSError:
            size = 0
        if size >= self._data_mb * 2 ** 20:
            return chunk_file(file_number(*last) + 1), 0
        return last, rows

    def discard_episode(self) -> None:
        """Drop the episode in progress: its temp clips, clips and rows a failed save had put in place."""
        ep = self._require_episode("discard_episode")
        self._episode = None
        for enc in ep.encoders.values():
            enc.abort()
            _unlink(enc.path)
        for *_, clip, new in ep.clips.values():
            if new:  # a clip appended to a shared file stays there, past the end its episodes name
                _unlink(clip)
        if self._landed is not None:
            self._landed = None
            self._restore_files(self._state, self._where)
            self._write_meta(self._state, self._where)

    # --- meta ------------------------------------------------------------------------------------

    def _write_meta(self, state: DatasetState, where: list[Where]) -> None:
        """Write the meta files whose bytes changed, each atomically, in commit order."""
        root = self.root
        fs.make_dirs(root / "meta/episodes/chunk-000")
        n = len(state.episodes)
        rows = [{"episode_index": e.index, "task": e.task, "length": e.length, "where": w, "stats": e.stats}
                for e, w in zip(state.episodes, where)]
        files: list[tuple[Path, object]] = [
            (root / V3_TASKS, lambda: _parquet_bytes(tasks_table(list(state.tasks)))),
            (episodes_path(root), lambda: _parquet_bytes(episodes_table(rows))),  # the commit point
            (root / STATS, lambda: json.dumps(aggregate_stats([e.stats for e in state.episodes]), indent=4).encode()),
        ]
        if n:
            files.append((root / STATISTICS, lambda: json.dumps({state.dataset_name: statistics_entry(
                np.concatenate(state.actions), np.concatenate(state.states), n, state.action_mask)}, indent=2).encode()))
        info = info_dict(state.schema, n, state.total_frames, len(state.tasks), self._data_mb, self._video_mb)
        files.append((root / INFO, lambda: json.dumps(info, indent=4).encode()))
        for path, render in files:
            try:
                data = render()
            except OSError as e:
                raise fs.DatasetWriteError(path, e) from e
            try:
                if path.read_bytes() == data:
                    continue
            except OSError:
                pass
            fs.write_atomic(path, lambda f: f.write(data))
        if not n and (root / STATISTICS).exists():
            _unlink(root / STATISTICS)


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _partial(path: Path) -> Path:
    return path.with_name(path.name + fs.PARTIAL)


def _unlink(path: Path) -> None:
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as e:
        raise fs.DatasetWriteError(Path(path), e, "remove") from e


def _accumulate(pixels: dict, cam: str, rgb: np.ndarray) -> None:
    """Per-channel sums for LeRobot's image statistics (values in [0, 1])."""
    x = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    acc = pixels.setdefault(cam, [0, np.zeros(3), np.zeros(3), np.full(3, np.inf), np.full(3, -np.inf)])
    acc[0] += 1
    acc[1] += x.mean(0)
    acc[2] += (x * x).mean(0)
    acc[3] = np.minimum(acc[3], x.min(0))
    acc[4] = np.maximum(acc[4], x.max(0))


def _pixel_stats(acc: list) -> dict:
    """LeRobot's image stats: per channel, shaped (3, 1, 1); count is the number of frames."""
    n, s1, s2, lo, hi = acc
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    shape = lambda v: np.asarray(v, np.float64).reshape(3, 1, 1).tolist()  # noqa: E731
    return {"min": shape(lo), "max": shape(hi), "mean": shape(mean), "std": shape(std), "count": [int(n)]}


LAYOUTS = (V3, "v2.1")


def open_writer(root: str | Path, layout: str = V3, video: bool = True, video_codec: str = DEFAULT_CODEC,
                video_crf: int = DEFAULT_CRF, video_gop: int = DEFAULT_GOP, data_file_mb: float | None = None,
                video_file_mb: float | None = None, **common) -> DatasetWriterV21:
    """A writer of ``layout``: v3.0 (DatasetWriter, the default) or v2.1 (DatasetWriterV21, which
    ignores the video and file-size settings). ``common`` are the arguments both take."""
    if layout == V3:
        return DatasetWriter(root, video=video, video_codec=video_codec, video_crf=video_crf, video_gop=video_gop,
                             data_file_mb=data_file_mb, video_file_mb=video_file_mb, **common)
    if layout == "v2.1":
        return DatasetWriterV21(root, **common)
    raise ValueError(f"dataset layout is {layout!r}; expected one of {LAYOUTS} (v3.0 is what LeRobot reads)")
