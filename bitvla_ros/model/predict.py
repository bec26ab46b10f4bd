"""One observation in, one un-normalized action chunk out: model + processor + statistics.

This is the call the policy node and the evaluation make. It owns no ROS and no scheduling.

``device`` (auto, cpu, cuda, cuda:N; model/device.py) is where the model is loaded (packed codes
straight onto it) and where each batch goes; the chunk comes back to the host as numpy. On a CUDA
device the forward is replayed from a CUDA graph (model/cuda_graph.py), captured at load by a
warm-up chunk, so the first real chunk is not the slow one. ``describe()`` says which device,
kernel backend and forward were chosen and why (the node puts it in /diagnostics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.kernels import heap
from bitvla_ros.kernels.registry import backend_reason
from bitvla_ros.model.checkpoint import load_model
from bitvla_ros.model.cuda_graph import GRAPH, DeployedForward
from bitvla_ros.model.device import resolve_device
from bitvla_ros.model.normalize import NormStats
from bitvla_ros.model.processor import BitVLAProcessor

log = logging.getLogger(__name__)
# The warm-up chunk's instruction: a prompt of typical length (a new length is captured on its first chunk).
WARMUP_INSTRUCTION = "put the bowl on the plate"


@dataclass(frozen=True)
class ActionChunk:
    actions: np.ndarray     # (chunk, action_dim), robot units; the gripper as the model outputs it
    normalized: np.ndarray  # (chunk, action_dim), what the head produced
    inference_s: float      # wall time of preprocessing + the forward pass


class BitVLAPredictor:
    def __init__(self, model: BitVLA, processor: BitVLAProcessor, stats: NormStats, *,
                 cuda_graphs: bool | None = None, device_reason: str = "", backend_reason: str = ""):
        """``model`` is used on the device it is on; ``cuda_graphs=None`` replays graphs there if it
        is a CUDA device."""
        cfg = model.config
        if stats.action_dim != cfg.action_dim:
            raise ValueError(f"statistics {stats.key!r} have {stats.action_dim} action dims, the model {cfg.action_dim}")
        if cfg.use_proprio and stats.proprio_dim != cfg.proprio_dim:
            raise ValueError(f"statistics {stats.key!r} have {stats.proprio_dim} proprio dims, "
                             f"the model {cfg.proprio_dim}")
        self.model, self.processor, self.stats = model.eval(), processor, stats
        self.device = model.device
        self.device_reason = device_reason or f"model on {self.device}"
        self.backend_reason = backend_reason or (model.backend_name or "mixed backends")
        self.forward = DeployedForward(self.model, cuda_graphs, log=log.info)
        self.warmup_s: float | None = None

    @classmethod
    def from_pretrained(cls, directory: str | Path, backend: str = "auto", unnorm_key: str | None = None,
                        center_crop: bool | None = None, dtype: torch.dtype | None = None,
                        image_pipeline: str | None = None, device: str | torch.device = "auto",
                        cuda_graphs: bool | None = None, warmup: bool | None = None) -> "BitVLAPredictor":
        """``center_crop=None`` follows the model (its config says whether it trained on crops);
        ``image_pipeline=None`` too ("siglip" unless its config.json says "libero").
        ``warmup=None`` runs one chunk at load where the forward is a CUDA graph (compiles the
        kernels, prepares the weights, captures the graph)."""
        choice = resolve_device(device)
        loaded = load_model(directory, backend=backend, dtype=dtype, device=choice.device)
        crop = loaded.config.center_crop if center_crop is None else center_crop
        pipeline = loaded.config.image_pipeline if image_pipeline is None else image_pipeline
        processor = BitVLAProcessor.from_pretrained(directory, loaded.config, center_crop=crop, image_pipeline=pipeline)
        predictor = cls(loaded.model, processor, NormStats.load(directory, unnorm_key), cuda_graphs=cuda_graphs,
                        device_reason=choice.reason, backend_reason=backend_reason(backend, choice.device))
        if warmup or (warmup is None and predictor.forward.mode == GRAPH):
            predictor.warm_up()
        log.info("BitVLA predictor: %s", predictor.summary())
        return predictor

    def describe(self) -> dict[str, str]:
        """The device, kernel backend and forward in use, each with why (for logs and /diagnostics)."""
        return {"device": str(self.device), "device_reason": self.device_reason,
                "backend": self.model.backend_name or "", "backend_reason": self.backend_reason,
                "forward": self.forward.mode, "forward_reason": self.forward.reason}

    def summary(self) -> str:
        d = self.describe()
        return (f"device {d['device']} ({d['device_reason']}); backend {d['backend']} ({d['backend_reason']}); "
                f"forward {d['forward']} ({d['forward_reason']})")

    def warm_up(self, instruction: str = WARMUP_INSTRUCTION) -> ActionChunk:
        """One chunk on blank images: everything done once (kernel builds, weight preparation, a
        CUDA graph for this prompt's length) happens here instead of in the first real chunk."""
        cfg, s = self.model.config, self.model.config.vision.image_size
        images = [np.zeros((s, s, 3), np.uint8)] * cfg.num_images
        proprio = (self.stats.proprio_q01 + self.stats.proprio_q99) / 2 if cfg.use_proprio else None
        chunk = self.predict(images, instruction, proprio)
        self.warmup_s = chunk.inference_s
        return chunk

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray | None = None) -> ActionChunk:
        """images in model order (uint8 RGB), the instruction, and the *raw* proprio state."""
        start = time.perf_counter()
        state = self.stats.normalize_proprio(proprio) if self.model.config.use_proprio else None
        batch = {k: v.to(self.device) for k, v in self.processor(images, instruction, state).items()}
        normalized = self.forward(**batch)[0].cpu().double().numpy()
        if self.device.type == "cpu":
            heap.release_free_heap()  # the activations' pages, until the next chunk (kernels/heap.py)
        return ActionChunk(self.stats.unnormalize_actions(normalized), normalized, time.perf_counter() - start)
