"""MP4 clips of episodes (agentview frames), for a person to watch."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_mp4(frames: list[np.ndarray], path: Path, fps: float = 20.0) -> Path | None:
    """RGB uint8 frames → an MP4 (mp4v). None if there is nothing to write or no encoder."""
    if not frames:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        return None
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path
