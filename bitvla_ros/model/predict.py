"""One observation in, one un-normalized action chunk out: model + processor + statistics.

This is the call the policy node and the evaluation make. It owns no ROS and no scheduling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.checkpoint import load_model
from bitvla_ros.model.normalize import NormStats
from bitvla_ros.model.processor import BitVLAProcessor


@dataclass(frozen=True)
class ActionChunk:
    actions: np.ndarray     # (chunk, action_dim), robot units; the gripper as the model outputs it
    normalized: np.ndarray  # (chunk, action_dim), what the head produced
    inference_s: float      # wall time of preprocessing + the forward pass


class BitVLAPredictor:
    def __init__(self, model: BitVLA, processor: BitVLAProcessor, stats: NormStats):
        cfg = model.config
        if stats.action_dim != cfg.action_dim:
            raise ValueError(f"statistics {stats.key!r} have {stats.action_dim} action dims, the model {cfg.action_dim}")
        if cfg.use_proprio and stats.proprio_dim != cfg.proprio_dim:
            raise ValueError(f"statistics {stats.key!r} have {stats.proprio_dim} proprio dims, "
                             f"the model {cfg.proprio_dim}")
        self.model, self.processor, self.stats = model.eval(), processor, stats

    @classmethod
    def from_pretrained(cls, directory: str | Path, backend: str = "auto", unnorm_key: str | None = None,
                        center_crop: bool | None = None, dtype: torch.dtype | None = None,
                        image_pipeline: str | None = None) -> "BitVLAPredictor":
        """``center_crop=None`` follows the model (its config says whether it trained on crops);
        ``image_pipeline=None`` too ("siglip" unless its config.json says "libero")."""
        loaded = load_model(directory, backend=backend, dtype=dtype)
        crop = loaded.config.center_crop if center_crop is None else center_crop
        pipeline = loaded.config.image_pipeline if image_pipeline is None else image_pipeline
        processor = BitVLAProcessor.from_pretrained(directory, loaded.config, center_crop=crop, image_pipeline=pipeline)
        return cls(loaded.model, processor, NormStats.load(directory, unnorm_key))

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray | None = None) -> ActionChunk:
        """images in model order (uint8 RGB), the instruction, and the *raw* proprio state."""
        start = time.perf_counter()
        state = self.stats.normalize_proprio(proprio) if self.model.config.use_proprio else None
        batch = self.processor(images, instruction, state)
        normalized = self.model(**batch)[0].double().numpy()
        return ActionChunk(self.stats.unnormalize_actions(normalized), normalized, time.perf_counter() - start)
