"""Camera frames as MP4 (PyAV): several episodes per file and camera, read back frame-accurately.

Encoding streams: each frame goes to the encoder as it is recorded, so an episode in progress
holds no images in memory; its clip (under a temp name) is appended to the camera's current video
file when the episode is saved, by copying packets (`append_clip`). Frame i of an episode has the
presentation time from_timestamp + i/fps (constant frame rate) in its file, and i/fps is what the
data file's `timestamp` column says, as LeRobot expects.

Reading decodes from the keyframe at or before the wanted time forward to the frame whose time is
nearest (within half a frame), so any frame can be read without decoding the whole clip; a short
keyframe interval (`gop`, LeRobot uses 2) keeps that to a frame or two.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

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
    """Frames of one MP4 by time: ``frame(seconds)`` -> HxWx3 uint8 RGB.

    The file (or an episode's part of it) is demuxed once into its compressed packets, kept in
    memory, and frames are decoded from those with a decoder of its own: the nearest keyframe at
    or before the wanted frame, then forward to it. That avoids a file seek per frame, which costs
    ten times the decoding of a short GOP; reading on in order decodes only the next packet.
    Decoded frames are kept too (ClipCache bounds the memory), as training reads each frame again
    every epoch.
    """

    def __init__(self, path: Path, start: float | None = None, end: float | None = None):
        """The frames of ``path`` from ``start`` to ``end`` seconds (default: all): one episode's
        part of a shared file, from the keyframe at or before its first frame."""
        self.path = Path(path)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tb = stream.time_base
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            margin = 4 / fps if fps else 0.1  # a few frames more, in case a decoder holds some back
            if start:
                container.seek(int(start / tb), stream=stream, backward=True, any_frame=False)
            packets = []
            for p in container.demux(stream):
                if not p.size or p.pts is None:
                    continue
                if end is not None and float(p.pts * tb) > end + margin:
                    break
                packets.append((p.pts, p.is_keyframe, bytes(p)))
            packets.sort()
            self._ctx = av.CodecContext.create(stream.codec_context.name, "r")
            self._ctx.extradata = stream.codec_context.extradata
        self._ctx.thread_count = 1  # frame threads delay each output frame: slower for random access
        self._pts = [p for p, _, _ in packets]
        self._times = np.array([float(p * tb) for p in self._pts])
        self._key = [k for _, k, _ in packets]
        self._data = [d for _, _, d in packets]
        self._packet_bytes = sum(len(d) for d in self._data)
        self._decoded: dict[int, np.ndarray] = {}  # RGB frames by pts
        self._decoded_bytes = 0
        self._tb = tb
        self._half = 0.5 / fps if fps else 1e-3
        self._fed = -1  # index of the last packet sent to the decoder (-1: flushed)
        self._ready: dict[int, object] = {}  # decoded frames by pts, not yet asked for
        self._rgb = VideoReformatter()  # keeps its conversion context: 6x faster than frame.to_ndarray(format=)

    def frame(self, seconds: float) -> np.ndarray:
        i = int(np.searchsorted(self._times, seconds - self._half))
        if i >= len(self._times) or abs(self._times[i] - seconds) > self._half:
            raise ValueError(f"{self.path} has no frame at {seconds:.4f} s (the clip may be shorter than its episode "
                             "says); re-record the episode or run `bitvla dataset info` on the dataset")
        want = self._pts[i]
        if want in self._decoded:
            return self._decoded[want].copy()
        if want in self._ready:
            return self._to_rgb(want, self._ready.pop(want))
        if not (self._fed < i and all(not self._key[j] for j in range(self._fed + 1, i + 1)) and self._fed >= 0):
            k = i
            while k > 0 and not self._key[k]:
                k -= 1
            self._ctx.flush_buffers()
            self._ready.clear()
            self._fed = k - 1
        while True:  # feed packets until the wanted frame comes out (decoders may hold a few back)
            if self._fed + 1 < len(self._data):
                self._fed += 1
                packet = av.Packet(self._data[self._fed])
                packet.pts = packet.dts = self._pts[self._fed]
                packet.time_base = self._tb
                frames = self._ctx.decode(packet)
            else:
                frames = self._ctx.decode(None)
                self._fed = -1  # drained: the next read starts afresh
                if not frames:
                    break
            for f in frames:
                self._ready[f.pts] = f
            if want in self._ready:
                frame = self._ready.pop(want)
                self._ready = {pts: f for pts, f in self._ready.items() if pts > want}
                return self._to_rgb(want, frame)
        raise ValueError(f"{self.path}: the frame at {seconds:.4f} s could not be decoded; the file may be damaged")

    def _to_rgb(self, pts: int, frame) -> np.ndarray:
        rgb = self._rgb.reformat(frame, format="rgb24").to_ndarray()
        self._decoded[pts] = rgb  # kept: training reads every frame again each epoch
        self._decoded_bytes += rgb.nbytes
        return rgb.copy()

    @property
    def nbytes(self) -> int:
        """Memory held: the compressed packets and the frames decoded so far."""
        return self._packet_bytes + self._decoded_bytes

    def close(self) -> None:
        self._data, self._ready, self._decoded = [], {}, {}
        self._packet_bytes = self._decoded_bytes = 0


class ClipCache:
    """Open readers per process (a forked DataLoader worker opens its own), the least recently used
    dropped once they hold more than ``max_bytes`` (packets and decoded frames: an episode's
    128x128 camera of 130 frames is about 6 MB decoded, so the default keeps ~80 of them)."""

    def __init__(self, max_bytes: int = 512 * 2 ** 20):
        self.max_bytes, self._pid, self._open = max_bytes, os.getpid(), {}

    def get(self, path: Path, start: float | None = None, end: float | None = None) -> ClipReader:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        key = (Path(path), start, end)
        reader = self._open.pop(key, None) or ClipReader(path, start, end)
        self._open[key] = reader  # most recently used last
        held = sum(r.nbytes for r in self._open.values())
        while held > self.max_bytes and len(self._open) > 1:
            old = self._open.pop(next(iter(self._open)))
            held -= old.nbytes
            old.close()
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
        # only this episode's part of the file: a shared file can be hundreds of MB
        end = self.start + (self.length - 0.5) / self.fps
        return self._cache.get(self.path, self.start, end).frame(self.start + t / self.fps)


def video_info(shape, fps: float, codec: str, pix_fmt: str) -> dict:
    """The `info` entry of a video feature in meta/info.json, as LeRobot writes it."""
    return {"video.height": int(shape[0]), "video.width": int(shape[1]),
            "video.codec": {"libx264": "h264", "libsvtav1": "av1", "hevc": "hevc"}.get(codec, codec),
            "video.pix_fmt": pix_fmt, "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
            "has_audio": False}


APPENDABLE = ("h264", "hevc")  # PyAV copies these streams' packets; an AV1 stream (libdav1d) it cannot


def same_stream(a: Path, b: Path) -> bool:
    """Whether the clips' streams can share one file: same codec, size, pixel format and headers."""
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        x, y = ca.streams.video[0].codec_context, cb.streams.video[0].codec_context
        return x.name in APPENDABLE and (x.name, x.width, x.height, x.pix_fmt, x.extradata) == (
            y.name, y.width, y.height, y.pix_fmt, y.extradata)


def append_clip(path: Path, clip: Path, start: float, out: Path) -> None:
    """Write to ``out`` the frames of ``path`` before ``start`` seconds, then ``clip``'s frames shifted
    to begin at ``start``: packets are copied, nothing is decoded or encoded again."""
    with av.open(str(path)) as a, av.open(str(clip)) as b, av.open(str(out), mode="w", format="mp4") as o:
        sa, sb = a.streams.video[0], b.streams.video[0]
        so = o.add_stream_from_template(sa)
        half = 0.25 / float(sa.average_rate or sa.guessed_rate or 1000)
        for packet in a.demux(sa):
            if packet.dts is None or float(packet.pts * sa.time_base) >= start - half:
                continue  # the flush packet, or frames of an episode that was never committed
            packet.stream = so
            o.mux(packet)
        shift = int(round(start / sb.time_base))
        for packet in b.demux(sb):
            if packet.dts is None:
                continue
            packet.pts += shift
            packet.dts += shift
            packet.stream = so
            o.mux(packet)
