"""The project's own image conversion (used where cv_bridge is not installed), encoding by encoding."""

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.ros.conversions import compressed_to_rgb, image_to_rgb, rgb_to_compressed, rgb_to_image

RGB = (np.arange(5 * 7 * 3) * 7 % 256).astype(np.uint8).reshape(5, 7, 3)


def raw(encoding, pixels, step=None, pad=0):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 255, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=step or rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 7, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 7, np.uint8)], axis=2)),
])
def test_color_encodings_give_rgb(encoding, pixels):
    assert np.array_equal(image_to_rgb(raw(encoding, np.ascontiguousarray(pixels)), use_cv_bridge=False), RGB)


def test_mono8_is_replicated_and_row_padding_is_skipped():
    gray = RGB[..., 0]
    out = image_to_rgb(raw("mono8", gray[..., None], pad=3), use_cv_bridge=False)
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))


@pytest.mark.parametrize("mutate,cause", [
    (lambda m: setattr(m, "encoding", "yuv422"), "bad_encoding"),
    (lambda m: setattr(m, "encoding", "16UC1"), "bad_encoding"),
    (lambda m: setattr(m, "step", 10), "size_mismatch"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-30]), "truncated"),
    (lambda m: setattr(m, "height", 0), "size_mismatch"),
])
def test_bad_images_are_refused_with_a_cause(mutate, cause):
    msg = raw("rgb8", RGB)
    mutate(msg)
    with pytest.raises(Rejected) as e:
        image_to_rgb(msg, use_cv_bridge=False)
    assert e.value.cause == cause


def test_round_trips_through_our_publishers():
    for encoding in ("rgb8", "bgr8"):
        assert np.array_equal(image_to_rgb(rgb_to_image(Image(), RGB, encoding), use_cv_bridge=False), RGB)
    png = rgb_to_compressed(CompressedImage(), RGB, fmt="png")
    assert np.array_equal(compressed_to_rgb(png), RGB)
    blocks = np.zeros((32, 32, 3), np.uint8)
    blocks[:, :16] = (200, 30, 10)  # red left, blue right: JPEG is lossy, but the order must hold
    blocks[:, 16:] = (10, 30, 200)
    jpeg = compressed_to_rgb(rgb_to_compressed(CompressedImage(), blocks, fmt="jpeg", quality=95))
    assert np.abs(jpeg.astype(int) - blocks).mean() < 4
    with pytest.raises(Rejected, match="bad_image"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))
