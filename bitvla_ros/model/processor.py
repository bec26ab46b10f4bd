"""BitVLAProcessor: camera images + instruction + proprio -> model inputs (docs/model.md).

The prompt is built from separately tokenized text segments with the special ids spliced in.
Special tokens split the text when a whole rendered chat template is encoded, so this gives the
same ids (test/test_processor.py checks it) without rendering and re-scanning 500 image tokens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bitvla_ros.model.config import BitVLAConfig
from bitvla_ros.model.tokenizer import SYSTEM_PROMPT, load_tokenizer, token_ids, vocab_size
from bitvla_ros.model.libero_images import IMAGE_PIPELINES, libero_image_pipeline

MAX_INSTRUCTION_CHARS = 1000
CROP_SIDE = math.sqrt(0.9)  # the central box keeps 90% of the area


class BitVLAProcessor:
    def __init__(self, config: BitVLAConfig, tokenizer, center_crop: bool = False, image_pipeline: str = "siglip"):
        """``image_pipeline``: "siglip" (optional integer center crop, PIL-like bicubic resize) or
        "libero" (the published LIBERO eval's JPEG round trip, Lanczos3 resize and TF center crop,
        bitvla_ros/model/libero_images.py; ``center_crop`` does not apply, that pipeline always crops)."""
        if image_pipeline not in IMAGE_PIPELINES:
            raise ValueError(f"image_pipeline must be one of {IMAGE_PIPELINES}, got {image_pipeline!r}")
        found = token_ids(tokenizer)
        if found != config.tokens:
            raise ValueError(f"the tokenizer's special ids {found} differ from the config's {config.tokens}; "
                             "load the tokenizer.json that belongs to this model")
        if vocab_size(tokenizer) > config.text.vocab_size:
            raise ValueError(f"the tokenizer has {vocab_size(tokenizer)} tokens but the model embeds only "
                             f"{config.text.vocab_size}; load the tokenizer.json that belongs to this model")
        self.config, self.tokenizer, self.center_crop = config, tokenizer, center_crop
        self.image_pipeline = image_pipeline
        t = config.tokens
        # Everything but the instruction sentence is fixed: encode it once.
        images = [t.image] * (config.vision.num_patches * config.num_images)
        self._head = [t.bos, *self._encode(SYSTEM_PROMPT), t.eot, *self._encode("User: "), *images]
        if config.use_proprio:
            self._head.append(t.proprio)
        self._tail = [t.eot, *self._encode("Assistant: "), *[t.first_action] * config.num_action_slots, t.stop]

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: BitVLAConfig, center_crop: bool = False,
                        image_pipeline: str = "siglip"):
        return cls(config, load_tokenizer(directory), center_crop=center_crop, image_pipeline=image_pipeline)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    # --- text ------------------------------------------------------------------------------

    def prompt_ids(self, instruction: str) -> torch.Tensor:
        """The full input sequence (L,): prompt, action slots and stop id."""
        if not isinstance(instruction, str):
            raise ValueError(f"the instruction must be a string, got {type(instruction).__name__}")
        text = instruction.strip()
        if not text:
            raise ValueError("the instruction is empty; say what the robot should do, e.g. 'put the bowl on the plate'")
        if len(text) > MAX_INSTRUCTION_CHARS:
            raise ValueError(f"the instruction has {len(text)} characters, more than the {MAX_INSTRUCTION_CHARS} "
                             "allowed; give a short task description")
        ids = self._head + self._encode(f"What action should the robot take to {text.lower()}?") + self._tail
        limit = self.config.text.max_position_embeddings
        if len(ids) > limit:
            raise ValueError(f"the prompt is {len(ids)} tokens, more than the model's {limit} positions; "
                             "shorten the instruction")
        return torch.tensor(ids, dtype=torch.long)

    def pad_batch(self, sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad 1-D id tensors with the pad id, as the published collator: (ids, mask), each (B, L)."""
        if not sequences:
            raise ValueError("pad_batch got no sequences")
        for s in sequences:
            if s.dim() != 1:
                raise ValueError(f"pad_batch expects 1-D id tensors, got shape {tuple(s.shape)}")
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.config.tokens.pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, s in enumerate(sequences):
            ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
        return ids, mask

    # --- images ----------------------------------------------------------------------------

    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB (or HxW mono, HxWx4 RGBA) -> (3, S, S) float in [-1, 1], as SigLIP's processor."""
        if not isinstance(image, np.ndarray):
            raise ValueError(f"the image must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise ValueError(f"the image has dtype {image.dtype}; expected uint8 RGB (0..255)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
            raise ValueError(f"the image has shape {image.shape}; expected HxWx3 RGB, HxWx4 RGBA or HxW mono")
        if self.image_pipeline == "libero":
            rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else np.ascontiguousarray(image[:, :, :3])
            x = torch.from_numpy(libero_image_pipeline(rgb, size=self.config.vision.image_size)).permute(2, 0, 1)
            return x.float() / 127.5 - 1  # already at the model's size: no further resize
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        x = x[:3].expand(3, -1, -1)  # RGBA drops alpha; mono repeats its one channel
        h, w = x.shape[1:]
        if self.center_crop:
            ch, cw = max(1, round(h * CROP_SIDE)), max(1, round(w * CROP_SIDE))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, top: top + ch, left: left + cw]
        size = self.config.vision.image_size
        return _pil_bicubic(x, size).float() / 127.5 - 1

    # --- everything ------------------------------------------------------------------------

    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio=None) -> dict:
        """One observation -> a batch of one: input_ids, attention_mask, pixel_values and proprio.

        ``images`` come in the training order (agentview first, then wrist); ``proprio`` must be
        already normalized. It is required when the model uses proprio and refused otherwise.
        """
        cfg = self.config
        if isinstance(images, np.ndarray) or len(images) != cfg.num_images:
            found = "one array" if isinstance(images, np.ndarray) else f"{len(images)}"
            raise ValueError(f"the model takes {cfg.num_images} images per step (agentview first, then wrist), "
                             f"got {found}; pass a list of {cfg.num_images} images")
        ids = self.prompt_ids(instruction)[None]
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.stack([self.preprocess_image(im) for im in images])[None],
        }
        if cfg.use_proprio:
            batch["proprio"] = self._proprio(proprio)
        elif proprio is not None:
            raise ValueError("this model does not use proprio (use_proprio is false); pass proprio=None")
        return batch

    def _proprio(self, proprio) -> torch.Tensor:
        dim = self.config.proprio_dim
        if proprio is None:
            raise ValueError(f"the model needs the normalized {dim}-D proprio state; got None")
        p = np.asarray(proprio, dtype=np.float64)
        if p.size != dim or p.ndim > 2 or (p.ndim == 2 and p.shape[0] != 1):
            raise ValueError(f"proprio has shape {p.shape}; expected ({dim},), the normalized robot state")
        if not np.isfinite(p).all():
            raise ValueError(f"proprio has non-finite values {p.reshape(-1).tolist()}; check the robot state input")
        return torch.from_numpy(p.reshape(1, dim)).float()


def _pil_bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, H, W) pixel values to (C, size, size) as PIL's BICUBIC does in SigLIP's processor.

    Antialiased bicubic (a = -0.5) is PIL's filter. PIL resizes width then height, storing uint8
    after each pass (round half up, clip): doing the same in float64 matches it to within 1 level
    on under 2% of pixels (PIL's fixed-point weights), where one float pass is off by up to 20.
    """
    x = x[None].double()
    for shape in ((x.shape[2], size), (size, size)):
        if x.shape[2:] != shape:
            x = F.interpolate(x, size=shape, mode="bicubic", antialias=True, align_corners=False)
            x = torch.floor(x + 0.5).clamp(0, 255)
    return x[0]
