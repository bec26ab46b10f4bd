"""The published BitVLA LIBERO evaluation protocol (docs/libero.md): its constants, the
seeding, and the action post-processing. The per-camera image steps (JPEG round trip, Lanczos3
resize, TF center crop; with how TensorFlow computes each) are in bitvla_ros/model/libero_images.py,
beside the processor that applies them, and are re-exported here.
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

# --- protocol constants ------------------------------------------------------------------------

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


