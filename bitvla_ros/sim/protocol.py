"""The published BitVLA LIBERO evaluation protocol (reference/bitvla.md §6): constants, and each
image transform as a pure numpy function that reproduces TensorFlow's numerics.

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

import random

import numpy as np

from bitvla_ros.model.libero_images import (  # noqa: F401 - the protocol's image steps, re-exported
    CROP_SCALE,
    IMAGE_PIPELINES,
    IMAGE_SIZE,
    JPEG_QUALITY,
    center_crop_resize,
    crop_and_resize,
    jpeg_roundtrip,
    libero_image_pipeline,
    resize_lanczos3,
    rotate_180,
)
from bitvla_ros.sim.gripper import model_to_env_gripper

# --- protocol constants (bitvla.md §6) ---------------------------------------------------------

TRIALS_PER_TASK = 50          # episodes per task; init state i for episode i
SEED = 7                      # torch / numpy / random seed of the eval process
ENV_SEED = 0                  # env.seed(0) on every env creation
RENDER_SIZE = 256             # OffScreenRenderEnv camera height and width
EXECUTE_STEPS = 8             # open loop: the whole chunk runs before the next query
TASKS_PER_SUITE = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10,
                   "libero_90": 90}


def __getattr__(name: str):
    """NUM_STEPS_WAIT and MAX_STEPS come from the LIBERO wrapper, which runs the wait steps itself.

    Imported lazily: that module sets the GL environment variables for MuJoCo on import, which a
    policy process that only needs the image transforms should not get."""
    if name in ("NUM_STEPS_WAIT", "MAX_STEPS"):
        from bitvla_ros.sim import libero_env

        return libero_env.SETTLE_STEPS if name == "NUM_STEPS_WAIT" else dict(libero_env.MAX_STEPS)
    from bitvla_ros.model import libero_images  # every image step of the protocol lives there

    if hasattr(libero_images, name):
        return getattr(libero_images, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def seed_everything(seed: int = SEED) -> None:
    """Seed python, numpy and torch (and ask cuDNN for deterministic kernels), as the eval does."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# --- actions -----------------------------------------------------------------------------------

def libero_postprocess_action(action) -> np.ndarray:
    """Model action(s) (..., 7) → env actions: gripper g → sign(2g − 1), then inverted (−1 = open).

    Arm dims pass through unchanged; g exactly 0.5 gives 0, as the eval's sign() does."""
    a = np.array(action, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] != 7:
        raise ValueError(f"expected 7-D actions [dx dy dz dax day daz gripper], got shape {a.shape}")
    flat = a.reshape(-1, 7)
    for row in flat:
        row[6] = model_to_env_gripper(row[6])
    return flat.reshape(a.shape)


