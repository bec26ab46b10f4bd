"""Image augmentation of the OFT recipe (docs/model.md), per camera, on uint8 RGB:
random-resized crop keeping 90% of the area (aspect 1) resized back, then brightness ±0.2,
contrast [0.8, 1.2], saturation [0.8, 1.2] and hue ±0.05, in that order. Each camera draws its own
randomness. At deployment the matching transform is the central 90% crop (`center_crop`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

CROP_AREA = 0.9


def random_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * math.sqrt(CROP_AREA))), max(1, round(w * math.sqrt(CROP_AREA)))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return cv2.resize(image[top: top + ch, left: left + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def color_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    x = x + rng.uniform(-0.2, 0.2)                                   # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.8, 1.2) + mean                    # contrast
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray[..., None]) * rng.uniform(0.8, 1.2) + gray[..., None]  # saturation
    hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)          # hue (OpenCV: H in degrees)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.05, 0.05) * 360.0) % 360.0
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return color_jitter(random_crop(image, rng), rng)
