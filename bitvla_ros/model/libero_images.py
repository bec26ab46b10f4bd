"""The image transforms of the published BitVLA LIBERO evaluation (docs/libero.md), each a
pure numpy function that reproduces TensorFlow's numerics. They live beside the processor, which
applies them with `image_pipeline="libero"`; the rest of the protocol is in sim/protocol.py.

Per camera, the published eval does (images already rotated 180°, see `rotate_180`):

1. `jpeg_roundtrip`: tf.image.encode_jpeg (quality 95, 4:2:0) then tf.io.decode_image;
2. `resize_lanczos3`: tf.image.resize(method="lanczos3", antialias=True) to 224, then
   tf.round (half to even) and clip to uint8;
3. `center_crop_resize`: convert_image_dtype to float [0, 1], tf.image.crop_and_resize (bilinear)
   of the central box covering 90% of the area back to 224×224, clip to [0, 1], and
   convert_image_dtype back to uint8 (saturate=True: ×255.5, then truncation);
4. the SigLIP processor (p/127.5 − 1; no resize, the image is already 224).

`libero_image_pipeline` chains 1–3. What TensorFlow does, and where it was read:

- scale_and_translate (tensorflow/core/kernels/image/scale_and_translate_op.cc, ComputeSpansCore
  and GatherSpans): float32 throughout; scale = out/in in float32, inv_scale = 1/scale rounded to
  float; with antialias the kernel is widened by max(inv_scale, 1); sample_f = (x + 0.5)·inv_scale;
  span = [ceil(sample_f − r − 0.5), floor(sample_f + r − 0.5)] clamped to the image; weight =
  kernel(|source + 0.5 − sample_f| / kernel_scale), normalised by multiplying with 1/sum. Rows are
  resampled first (into a float32 buffer), then columns, accumulating w·x in span order. (Assumed:
  no fused multiply-add in TF's CPU build; numpy multiplies and adds separately too.)
- the Lanczos kernel (tensorflow/core/kernels/image/sampling_kernels.h): 0 beyond the radius, 1 at
  |x| ≤ 1e-3, else r·sin(πx)·sin(πx/r)/(π²x²) in float with π = 3.14159265359f.
- resize_images_v2 (tensorflow/python/ops/image_ops_impl.py) passes the uint8 image straight to
  scale_and_translate (the kernel casts each pixel to float) and never skips an equal-size resize.
- crop_and_resize (tensorflow/core/kernels/image/crop_and_resize_op.cc, CPU functor): float32;
  height_scale = (y2 − y1)(H − 1)/(crop_h − 1); in_y = y1(H − 1) + y·height_scale; samples
  outside [0, H − 1] take the extrapolation value; bilinear as top + (bottom − top)·y_lerp with
  top/bottom lerped along x first.
- the OpenVLA-OFT helpers the BitVLA eval uses (experiments/robot/openvla_utils.py
  `resize_image_for_policy`, `crop_and_resize`, `center_crop_image`): box [(1 − s)/2, (1 − s)/2,
  (1 − s)/2 + s, (1 − s)/2 + s] with s = clip(sqrt(0.9), 0, 1) in float32.

JPEG decoding matches TF only with the optional simplejpeg package: see `jpeg_roundtrip`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 224              # model input; the resize and the crop both produce this
CROP_SCALE = 0.9              # the center crop keeps this fraction of the area
JPEG_QUALITY = 95             # tf.image.encode_jpeg's default
IMAGE_PIPELINES = ("siglip", "libero")
_F32 = np.float32


def rotate_180(image: np.ndarray) -> np.ndarray:
    """Both axes flipped, as the eval turns LIBERO's upside-down renders upright."""
    return np.ascontiguousarray(image[::-1, ::-1])


def uint8_to_float(image: np.ndarray) -> np.ndarray:
    """tf.image.convert_image_dtype(uint8 → float32): cast, then × float32(1/255)."""
    return image.astype(_F32) * _F32(1.0 / 255)


def float_to_uint8(image: np.ndarray) -> np.ndarray:
    """tf.image.convert_image_dtype(float → uint8, saturate=True): × 255.5 in float32, clamp to
    [0, 255], then truncate toward zero."""
    scaled = np.asarray(image, dtype=_F32) * _F32(255.5)
    return np.clip(scaled, _F32(0), _F32(255)).astype(np.uint8)


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        found = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} expects an HxWx3 uint8 RGB image, got {found}")
    return image


# --- 1. JPEG round trip ------------------------------------------------------------------------

JPEG_DECODERS = ("simplejpeg", "opencv")


def default_jpeg_decoder() -> str:
    """The decoder used by default: simplejpeg where it is installed (it decodes as TF does), else opencv."""
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        return "opencv"
    return "simplejpeg"


def jpeg_roundtrip(image: np.ndarray, quality: int = JPEG_QUALITY, decoder: str | None = None) -> np.ndarray:
    """Encode to JPEG and decode again, as tf.image.encode_jpeg + tf.io.decode_image do.

    Encoding (OpenCV) matches TF's: both call libjpeg(-turbo) with jpeg_set_defaults (the accurate
    integer DCT), jpeg_set_quality(95, baseline) and 4:2:0 chroma subsampling.
    Decoding: TF uses the *fast* integer IDCT (JDCT_IFAST; tensorflow/core/kernels/image/
    decode_image_op.cc: "The TensorFlow-chosen default for jpeg decoding is IFAST") with fancy
    (triangle) chroma upsampling. ``decoder="simplejpeg"`` does exactly that (libjpeg-turbo with
    fastdct=True, fastupsample=False). OpenCV has no switch and decodes with the accurate IDCT
    (JDCT_ISLOW): on LIBERO renders that differs from TF's decode by ±1–15 levels on ~60% of the
    values (RMSE ~1.6), and after the 224 resize and the crop by ~1 level on average.
    ``decoder=None`` takes simplejpeg where it is installed, else OpenCV.
    """
    import cv2

    _check_rgb(image, "jpeg_roundtrip")
    decoder = decoder or default_jpeg_decoder()
    if decoder not in JPEG_DECODERS:
        raise ValueError(f"decoder must be one of {JPEG_DECODERS}, got {decoder!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality),
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as JPEG")
    if decoder == "simplejpeg":
        import simplejpeg

        return simplejpeg.decode_jpeg(data.tobytes(), colorspace="RGB", fastdct=True, fastupsample=False)
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


# --- 2. Lanczos resize (scale_and_translate) ---------------------------------------------------

_PI = _F32(3.14159265359)  # kPI in sampling_kernels.h


def lanczos_kernel(x, radius: int = 3) -> np.ndarray:
    """TF's LanczosKernelFunc in float32: 0 for |x| > r, 1 for |x| ≤ 1e-3, else
    r·sin(πx)·sin(πx/r)/(π²x²). sinf is taken as the correctly rounded float64 sine."""
    x = np.abs(np.asarray(x, dtype=_F32))
    r = _F32(radius)
    px = _PI * x
    s1 = np.sin(px.astype(np.float64)).astype(_F32)
    s2 = np.sin((px / r).astype(np.float64)).astype(_F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = r * s1 * s2 / (_PI * _PI * x * x)
    value = np.where(x <= _F32(1e-3), _F32(1), value)
    return np.where(x > r, _F32(0), value).astype(_F32)


@lru_cache(maxsize=64)
def _spans(output_size: int, input_size: int, radius: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(starts (out,), weights (out, span)) as ComputeSpansCore makes them, for zero translation."""
    scale = _F32(output_size) / _F32(input_size)       # resize_images_v2: float32 division
    inv_scale = _F32(1.0 / float(scale))                 # `const float inv_scale = 1.0 / scale;`
    kernel_scale = max(inv_scale, _F32(1)) if antialias else _F32(1)
    reach = _F32(radius) * kernel_scale
    span_size = min(2 * int(math.ceil(reach)) + 1, input_size)
    one_over_kernel_scale = _F32(1) / kernel_scale
    starts = np.zeros(output_size, dtype=np.int64)
    weights = np.zeros((output_size, span_size), dtype=_F32)
    for x in range(output_size):
        sample_f = (_F32(x) + _F32(0.5)) * inv_scale      # + inv_translate (−0.0): no change
        if sample_f < 0 or sample_f > input_size:
            continue  # an empty span (never for a plain resize)
        start = int(math.ceil(sample_f - reach - _F32(0.5)))
        end = int(math.floor(sample_f + reach - _F32(0.5)))
        start = min(max(start, 0), input_size - 1)
        end = min(max(end, 0), input_size - 1) + 1
        sources = np.arange(start, end)
        pos = (sources.astype(_F32) + _F32(0.5)) - sample_f
        w = lanczos_kernel(np.abs(pos * one_over_kernel_scale), radius)
        total = _F32(0)
        for v in w:  # sequential float32 sum, as the C++ loop
            total = _F32(total + v)
        if abs(total) >= _F32(1000) * np.finfo(_F32).tiny:
            weights[x, : len(w)] = w * (_F32(1) / total)
        starts[x] = start
    return starts, weights


def _gather(data: np.ndarray, starts: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """out[i] = Σ_j weights[i, j] · data[starts[i] + j] along `axis`, accumulated in float32 in
    span order (multiply, then add: no fused multiply-add)."""
    n = data.shape[axis]
    moved = np.moveaxis(data, axis, 0)
    out = np.zeros((len(starts),) + moved.shape[1:], dtype=_F32)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    for j in range(weights.shape[1]):
        index = np.minimum(starts + j, n - 1)  # past the end the weight is 0 and the C++ loop stops
        w = weights[:, j].reshape(shape)
        out = out + w * moved[index]
    return np.moveaxis(out, 0, axis)


def scale_and_translate(image: np.ndarray, size: tuple[int, int], radius: int = 3,
                        antialias: bool = True) -> np.ndarray:
    """tf.image.resize(image, size, method=f"lanczos{radius}", antialias=antialias): an (H, W, C)
    or (H, W) image of any real dtype → float32 (h, w[, C]), unrounded."""
    data = np.asarray(image).astype(_F32)
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0 or data.ndim not in (2, 3) or 0 in data.shape:
        raise ValueError(f"cannot resize an image of shape {data.shape} to {size}")
    rows = _spans(out_h, data.shape[0], radius, antialias)
    cols = _spans(out_w, data.shape[1], radius, antialias)
    return _gather(_gather(data, *rows, axis=0), *cols, axis=1)


def resize_lanczos3(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """OFT's `resize_image_for_policy` after the JPEG step: Lanczos3 with antialias to size×size,
    tf.round (half to even, as np.round), clip to [0, 255], uint8."""
    _check_rgb(image, "resize_lanczos3")
    resized = scale_and_translate(image, (size, size), radius=3, antialias=True)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


# --- 3. center crop (crop_and_resize) ----------------------------------------------------------

def crop_and_resize(image: np.ndarray, box, size: tuple[int, int], extrapolation_value: float = 0.0) -> np.ndarray:
    """tf.image.crop_and_resize(method="bilinear") of one normalized box (y1, x1, y2, x2) of an
    (H, W, C) image → float32 (crop_h, crop_w, C)."""
    data = np.asarray(image).astype(_F32)
    if data.ndim != 3 or 0 in data.shape:
        raise ValueError(f"crop_and_resize expects an HxWxC image, got shape {data.shape}")
    height, width = data.shape[:2]
    y1, x1, y2, x2 = (_F32(v) for v in box)
    crop_h, crop_w = int(size[0]), int(size[1])

    def coords(lo, hi, extent, n):
        if n > 1:
            step = (hi - lo) * _F32(extent - 1) / _F32(n - 1)
            return lo * _F32(extent - 1) + np.arange(n, dtype=_F32) * step
        return np.full(1, _F32(0.5 * float(lo + hi) * (extent - 1)))  # float sum, then double, as in C++

    in_y, in_x = coords(y1, y2, height, crop_h), coords(x1, x2, width, crop_w)
    valid_y = (in_y >= 0) & (in_y <= height - 1)
    valid_x = (in_x >= 0) & (in_x <= width - 1)
    sy, sx = np.where(valid_y, in_y, 0).astype(_F32), np.where(valid_x, in_x, 0).astype(_F32)
    top, bottom = np.floor(sy).astype(np.int64), np.ceil(sy).astype(np.int64)
    left, right = np.floor(sx).astype(np.int64), np.ceil(sx).astype(np.int64)
    y_lerp = (sy - top.astype(_F32))[:, None, None]
    x_lerp = (sx - left.astype(_F32))[None, :, None]
    tl, tr = data[top][:, left], data[top][:, right]
    bl, br = data[bottom][:, left], data[bottom][:, right]
    upper = tl + (tr - tl) * x_lerp
    lower = bl + (br - bl) * x_lerp
    out = upper + (lower - upper) * y_lerp
    inside = (valid_y[:, None] & valid_x[None, :])[:, :, None]
    return np.where(inside, out, _F32(extrapolation_value)).astype(_F32)


def center_crop_box(scale: float = CROP_SCALE) -> tuple[np.float32, ...]:
    """OFT's box for a center crop keeping `scale` of the area, in float32 as TF computes it."""
    side = np.clip(np.sqrt(_F32(scale)), _F32(0), _F32(1)).astype(_F32)
    offset = (_F32(1) - side) / _F32(2)
    return offset, offset, _F32(offset + side), _F32(offset + side)


def center_crop_resize(image: np.ndarray, scale: float = CROP_SCALE, size: int = IMAGE_SIZE) -> np.ndarray:
    """OFT's `center_crop_image`: to float [0, 1], crop_and_resize of the central box to
    size×size, clip to [0, 1], back to uint8 (×255.5, truncation)."""
    _check_rgb(image, "center_crop_resize")
    crop = crop_and_resize(uint8_to_float(image), center_crop_box(scale), (size, size))
    return float_to_uint8(np.clip(crop, _F32(0), _F32(1)))


# --- the chain ---------------------------------------------------------------------------------

def libero_image_pipeline(image: np.ndarray, size: int = IMAGE_SIZE, crop_scale: float = CROP_SCALE,
                          jpeg_decoder: str | None = None) -> np.ndarray:
    """One upright camera image → the uint8 size×size image the SigLIP normalization takes."""
    decoded = jpeg_roundtrip(image, decoder=jpeg_decoder)
    return center_crop_resize(resize_lanczos3(decoded, size), crop_scale, size)
