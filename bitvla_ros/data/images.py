"""Image bytes as stored in the parquet files: JPEG (as BitVLA's training data) or PNG (lossless)."""

from __future__ import annotations

import cv2
import numpy as np

FORMATS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def check_format(image_format: str, jpeg_quality: int) -> str:
    fmt = str(image_format).lower()
    if fmt not in FORMATS:
        raise ValueError(f"image_format is {image_format!r}; expected 'jpeg' (compact, as BitVLA's training "
                         "data) or 'png' (lossless)")
    if not (isinstance(jpeg_quality, (int, np.integer)) and 1 <= jpeg_quality <= 100):
        raise ValueError(f"jpeg_quality is {jpeg_quality!r}; expected an integer from 1 to 100 (95 is the default)")
    return fmt


def encode_image(rgb: np.ndarray, image_format: str = "jpeg", jpeg_quality: int = 95) -> bytes:
    """HxWx3 uint8 RGB -> encoded bytes."""
    ext = FORMATS[image_format]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)  # OpenCV encodes BGR
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {image_format}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> HxWx3 uint8 RGB."""
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        raise ValueError(f"could not decode an image of {len(data)} bytes; the file may be corrupt")
    return rgb
