"""Dataset frames → model inputs and L1 targets: augmentation, tokens, normalization, padding."""

from __future__ import annotations

import numpy as np
import torch

from bitvla_ros.model.normalize import NormStats
from bitvla_ros.model.processor import BitVLAProcessor
from bitvla_ros.train.augment import augment


class SampleEncoder:
    """One `ChunkedSamples` item → tensors. Augmentation seeds from torch's generator, which the
    DataLoader seeds per worker and epoch, so every epoch sees new crops and colours while a run
    stays reproducible from its seed."""

    def __init__(self, processor: BitVLAProcessor, stats: NormStats, image_aug: bool):
        self.processor, self.stats, self.image_aug = processor, stats, image_aug

    def __call__(self, sample: dict) -> dict:
        images = sample["images"]
        if self.image_aug:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
            images = [augment(im, rng) for im in images]  # each camera its own draw
        state = self.stats.normalize_proprio(sample["state"]) if self.processor.config.use_proprio else None
        batch = self.processor(images, sample["instruction"], state)
        target = self.stats.normalize_actions(sample["actions"])
        return {"input_ids": batch["input_ids"][0], "pixel_values": batch["pixel_values"][0],
                "proprio": batch["proprio"][0] if "proprio" in batch else None,
                "actions": torch.from_numpy(target).float()}


def collate(processor: BitVLAProcessor, items: list[dict]) -> dict:
    ids, mask = processor.pad_batch([it["input_ids"] for it in items])
    out = {"input_ids": ids, "attention_mask": mask,
           "pixel_values": torch.stack([it["pixel_values"] for it in items]),
           "actions": torch.stack([it["actions"] for it in items])}
    if items[0]["proprio"] is not None:
        out["proprio"] = torch.stack([it["proprio"] for it in items])
    return out


class EncodedSamples(torch.utils.data.Dataset):
    def __init__(self, samples, encoder: SampleEncoder):
        self.samples, self.encoder = samples, encoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.encoder(self.samples[index])
