"""Learning-rate schedule of the OFT recipe: linear warm-up from 0, then cosine to 0."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
