"""Message <-> numpy conversions for the nodes.

Images use `cv_bridge` where a ROS install provides it, and this module's own numpy/OpenCV
conversion where it does not (a pip-only install; the tests run this path, encoding by encoding).
Bad input raises `Rejected` with a cause, so a node can count and refuse it without crashing.
The functions read message fields by name (duck typing), so they work on rclpy messages and on
anything shaped like them.
"""

from __future__ import annotations

import numpy as np

from bitvla_ros.policy.rejections import Rejected

# encoding -> (channels, how to get RGB from the channels)
_ENCODINGS = {
    "rgb8": (3, lambda a: a),
    "bgr8": (3, lambda a: a[..., ::-1]),
    "rgba8": (4, lambda a: a[..., :3]),
    "bgra8": (4, lambda a: a[..., 2::-1]),
    "mono8": (1, lambda a: np.repeat(a, 3, axis=2)),
    "8uc1": (1, lambda a: np.repeat(a, 3, axis=2)),
    "8uc3": (3, lambda a: a),  # as rgb8: the encoding says nothing about channel order
}
SUPPORTED_ENCODINGS = tuple(e for e in _ENCODINGS if e != "8uc1" and e != "8uc3")

try:  # a ROS install's cv_bridge, if there is one (it is not pip-installable)
    from cv_bridge import CvBridge as _CvBridge
except ImportError:  # pragma: no cover - depends on the install
    _CvBridge = None


def stamp_seconds(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def header_seconds(header, now: float) -> float:
    """The header's stamp in seconds; an unstamped message is taken as received `now`."""
    t = stamp_seconds(header.stamp)
    return t if t > 0 else now


def image_to_rgb(msg, use_cv_bridge: bool = True) -> np.ndarray:
    """sensor_msgs/Image → HxWx3 uint8 RGB (a copy)."""
    encoding = (msg.encoding or "").lower()
    if encoding not in _ENCODINGS:
        raise Rejected("bad_encoding", f"image encoding {msg.encoding!r} is not supported; use one of "
                                       f"{list(SUPPORTED_ENCODINGS)}")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise Rejected("size_mismatch", f"image is {w}x{h}")
    if use_cv_bridge and _CvBridge is not None:  # pragma: no cover - needs a ROS install
        try:
            return np.ascontiguousarray(_CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as e:  # noqa: BLE001 - cv_bridge raises its own error types
            raise Rejected("bad_image", f"cv_bridge could not convert the image: {e}") from None
    channels, to_rgb = _ENCODINGS[encoding]
    row = w * channels
    step = int(msg.step)
    if step < row:
        raise Rejected("size_mismatch", f"step {step} is less than width {w} x {channels} channels = {row} bytes")
    data = memoryview(msg.data).cast("B") if not isinstance(msg.data, (bytes, bytearray)) else msg.data
    if len(data) < step * (h - 1) + row:
        raise Rejected("truncated", f"image data has {len(data)} bytes, {w}x{h} {encoding} with step {step} "
                                    f"needs {step * h}")
    buf = np.frombuffer(data, dtype=np.uint8, count=min(len(data), step * h))
    if len(buf) < step * h:  # last row without its padding
        buf = np.concatenate([buf, np.zeros(step * h - len(buf), np.uint8)])
    pixels = buf.reshape(h, step)[:, :row].reshape(h, w, channels)
    return np.ascontiguousarray(to_rgb(pixels))


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) → HxWx3 uint8 RGB."""
    import cv2

    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if raw.size == 0:
        raise Rejected("truncated", "compressed image has no data")
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if img is None:
        raise Rejected("bad_image", f"could not decode compressed image (format {msg.format!r})")
    return np.ascontiguousarray(img[..., ::-1])


def rgb_to_image(msg, rgb: np.ndarray, encoding: str = "rgb8"):
    """Fill a sensor_msgs/Image from HxWx3 uint8 RGB (bgr8 flips the channels)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"can publish rgb8 or bgr8, not {encoding!r}")
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding, msg.is_bigendian, msg.step = encoding, 0, rgb.shape[1] * 3
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def rgb_to_compressed(msg, rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95):
    import cv2

    ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb[..., ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else [])
    if not ok:
        raise ValueError("image encoding failed")
    msg.format, msg.data = fmt, enc.tobytes()
    return msg


def camera_input(topic: str):
    """(message type, converter to RGB) for a camera topic: one ending in /compressed is a
    sensor_msgs/CompressedImage, any other a sensor_msgs/Image."""
    from sensor_msgs.msg import CompressedImage, Image

    return (CompressedImage, compressed_to_rgb) if topic.endswith("/compressed") else (Image, image_to_rgb)


def node_seconds(node) -> float:
    """The node's clock (ROS time: /clock under use_sim_time) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9
