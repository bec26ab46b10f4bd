"""Camera frames as MP4 (PyAV): one clip per episode and camera, read back frame-accurately.

Encoding streams: each frame goes to the encoder as it is recorded, so an episode in progress
holds no images in memory, and its file (under a temp name) is only renamed into place when the
episode is saved. Frame i of a clip has the presentation time i/fps (constant frame rate), which
is also what the data file's `timestamp` column says, as LeRobot expects.

Reading seeks to the keyframe at or before the wanted time and decodes forward to the frame whose
time is nearest (within half a frame), so any frame can be read without decoding the whole clip;
a short keyframe interval (`gop`, LeRobot uses 2) keeps that to a frame or two.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODECS = ("libx264", "libsvtav1", "hevc")
DEFAULT_CODEC = "libx264"  # H.264: decoded everywhere (LeRobot's pyav and torchcodec backends, browsers)
DEFAULT_CRF = 23
DEFAULT_GOP = 2


def check_video_settings(codec: str, crf: int, gop: int) -> None:
    if codec not in CODECS:
        raise ValueError(f"video_codec is {codec!r}; expected one of {CODECS} (libx264 is read by every tool)")
    if not (isinstance(crf, (int, np.integer)) and 0 <= crf <= 51):
        raise ValueError(f"video_crf is {crf!r}; expected an integer from 0 (lossless) to 51 (23 is the default)")
    if not (isinstance(gop, (int, np.integer)) and gop >= 1):
        raise ValueError(f"video_gop is {gop!r}; expected a positive keyframe interval (2 = fast random access)")


def pixel_format(shape) -> str:
    """yuv420p (what players and LeRobot expect) needs even sizes; odd ones keep full chroma."""
    return "yuv420p" if shape[0] % 2 == 0 and shape[1] % 2 == 0 else "yuv444p"


def rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class ClipEncoder:
    """Encodes HxWx3 uint8 RGB frames into ``path`` (written as given; the caller renames it)."""

    def __init__(self, path: Path, fps: float, shape, codec: str = DEFAULT_CODEC, crf: int = DEFAULT_CRF,
                 gop: int = DEFAULT_GOP):
        self.path, self.shape, self.frames = Path(path), tuple(shape), 0
        self.pix_fmt = pixel_format(shape)
        self._container = av.open(str(path), mode="w", format="mp4")
        try:
            stream = self._container.add_stream(codec, rate=rate(fps))
            stream.width, stream.height = int(shape[1]), int(shape[0])
            stream.pix_fmt = self.pix_fmt
            stream.gop_size = int(gop)
            options = {"crf": str(crf)}
            if codec == "libx264":
                options.update(preset="veryfast", tune="zerolatency", bf="0")  # no B-frames: pts order = decode order
            elif codec == "libsvtav1":
                options.update(preset="10")
            stream.options = options
            stream.codec_context.time_base = Fraction(1) / rate(fps)
            self._stream = stream
        except BaseException:
            self._container.close()
            raise

    def add(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = self._stream.codec_context.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush and close; the file is complete afterwards."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        try:
            if self._container is not None:
                self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        self._container = None


class ClipReader:
    """Frames of one MP4 by time: ``frame(seconds)`` -> HxWx3 uint8 RGB."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._container = av.open(str(path))
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._fps = float(self._stream.average_rate or self._stream.guessed_rate or 0) or None
        self._last: float | None = None  # time of the frame the decoder returned last
        self._frames = None

    def frame(self, seconds: float) -> np.ndarray:
        half = 0.5 / self._fps if self._fps else 1e-3
        # Reading on from the decoder's position is cheaper than a seek, for the next few frames.
        if self._last is None or seconds <= self._last + half or seconds > self._last + 16 * half:
            self._seek(seconds)
        for frame in self._frames:
            t = float(frame.pts * frame.time_base)
            if t < seconds - half:
                continue
            if t > seconds + half:
                break
            self._last = t
            return frame.to_ndarray(format="rgb24")
        self._last = None
        raise ValueError(f"{self.path} has no frame at {seconds:.4f} s (the clip may be shorter than its episode "
                         "says); re-record the episode or run `bitvla dataset info` on the dataset")

    def _seek(self, seconds: float) -> None:
        self._container.seek(max(0, int(seconds / self._stream.time_base)), stream=self._stream, backward=True,
                             any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._last = None

    def close(self) -> None:
        self._container.close()


class ClipCache:
    """Open readers per file, per process (a forked DataLoader worker opens its own)."""

    def __init__(self, size: int = 16):
        self.size, self._pid, self._open = size, os.getpid(), {}

    def get(self, path: Path) -> ClipReader:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        reader = self._open.pop(path, None) or ClipReader(path)
        self._open[path] = reader  # most recently used last
        while len(self._open) > self.size:
            self._open.pop(next(iter(self._open))).close()
        return reader


class ClipFrames:
    """One episode's frames of one camera, indexed like a list: clip[t] -> HxWx3 uint8 RGB."""

    def __init__(self, cache: ClipCache, path: Path, start: float, fps: float, length: int):
        self._cache, self.path, self.start, self.fps, self.length = cache, Path(path), start, fps, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, t: int) -> np.ndarray:
        if not -self.length <= t < self.length:
            raise IndexError(f"frame {t} is out of range; the episode has {self.length}")
        t %= self.length
        return self._cache.get(self.path).frame(self.start + t / self.fps)


def video_info(shape, fps: float, codec: str, pix_fmt: str) -> dict:
    """The `info` entry of a video feature in meta/info.json, as LeRobot writes it."""
    return {"video.height": int(shape[0]), "video.width": int(shape[1]),
            "video.codec": {"libx264": "h264", "libsvtav1": "av1", "hevc": "hevc"}.get(codec, codec),
            "video.pix_fmt": pix_fmt, "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
            "has_audio": False}
