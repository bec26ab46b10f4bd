"""`bitvla dataset` verbs: describe a dataset, convert one into the v3.0 layout."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bitvla_ros.data.reader import EpisodeDataset


def describe(dataset: EpisodeDataset) -> str:
    """Episodes, frames, fps, features, tasks and size on disk, in words."""
    d = dataset
    lengths = [e.length for e in d.episodes]
    size = sum(p.stat().st_size for p in d.root.rglob("*") if p.is_file())
    lines = [f"{d.root}: LeRobot {d.version}, {len(d)} episodes, {d.num_frames} frames at {d.fps} fps "
             f"({d.num_frames / d.fps:.1f} s), {size / 1e6:.2f} MB on disk"]
    if lengths:
        lines.append(f"  episode length: min {min(lengths)}, median {int(np.median(lengths))}, max {max(lengths)}")
    lines.append(f"  robot_type: {d.schema.robot_type or '-'}; statistics key: {d.name}; action mask: {d.action_mask}")
    lines.append("  features:")
    for key, ft in d.features.items():
        extra = ""
        if ft.get("dtype") == "video":
            info = ft.get("info") or {}
            extra = f"  ({info.get('video.codec')}, {info.get('video.pix_fmt')})"
        names = ft.get("names")
        shown = f" {names}" if isinstance(names, list) and key in ("observation.state", "action") else ""
        lines.append(f"    {key}: {ft.get('dtype')} {ft.get('shape')}{shown}{extra}")
    lines.append(f"  tasks ({len(d.tasks)}):")
    counts = {t: 0 for t in d.tasks}
    for e in d.episodes:
        counts[e.task] = counts.get(e.task, 0) + 1
    lines += [f"    {i}: {t!r} ({counts.get(t, 0)} episodes)" for i, t in enumerate(d.tasks)]
    return "\n".join(lines)


def convert(src: str | Path, dst: str | Path, video: bool = True, log=print, **writer_args) -> dict:
    """Copy every episode of the dataset at ``src`` (v2.1 or v3.0) into a new v3.0 dataset at ``dst``.

    Frames are decoded and written again (as video, or as images in parquet with ``video=False``);
    name, action mask, robot type and recorded times are kept.
    """
    from bitvla_ros.data.v3 import DatasetWriter

    source = EpisodeDataset(src)
    if Path(dst).exists() and any(Path(dst).iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty; choose a new folder for the converted dataset")
    if not video:
        writer_args.setdefault("image_format", _image_format(source))
    start = time.perf_counter()
    with DatasetWriter(dst, source.fps, source.camera_names, source.state_names, source.action_names,
                       source.schema.robot_type, video=video, action_mask=source.action_mask,
                       dataset_name=source.name, **writer_args) as writer:
        for e in source.episodes:
            frames = source.frames(e.index)
            writer.start_episode(e.task)
            for t in range(len(frames)):
                writer.add_frame({c: frames.image(c, t) for c in source.camera_names}, frames.state[t],
                                 frames.action[t], timestamp=float(frames.timestamp[t]))
            writer.save_episode()
            log(f"  episode {e.index}: {len(frames)} frames")
    return {"episodes": len(source), "frames": source.num_frames, "seconds": time.perf_counter() - start}


def _image_format(dataset: EpisodeDataset) -> str:
    """PNG stays PNG (lossless), anything else is written as JPEG."""
    if not dataset.episodes or not dataset.camera_names:
        return "jpeg"
    first = dataset.frames(0).images.get(dataset.camera_names[0])
    return "png" if first and isinstance(first[0], bytes) and first[0][:4] == b"\x89PNG" else "jpeg"
