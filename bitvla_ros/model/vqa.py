"""Visual question answering with BitVLA's vision-language backbone (zero-shot VQA).

A `VQAModel` holds a BitVLA (any checkpoint: a fine-tuned VLA, our packed folder, or a released
VLM folder without action head), its language head and tokenizer. `stream` yields the answer's
text as tokens are chosen; `ask` returns the whole answer with its timings. Images go through the
SigLIP preprocessing (resize, [-1, 1]); the vision tower, projector and LLM are the same modules
the action path runs, the LLM run causally with a KV cache (model/generate.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.checkpoint import (PACKED_FORMAT, CheckpointError, _tokenizer_dir, checkpoint_format,
                                         language_head, load_packed, load_published)
from bitvla_ros.model.chat import question_prompt_ids, stop_ids
from bitvla_ros.model.generate import GenerationSettings, generate_ids
from bitvla_ros.model.lm_head import LanguageHead
from bitvla_ros.model.processor import BitVLAProcessor
from bitvla_ros.model.tokenizer import load_tokenizer


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    stopped: bool  # ended on a stop token (False: max_new_tokens or the position limit)
    first_token_s: float  # question in → first token chosen (vision + prefill + one head)
    token_times_s: list[float] = field(default_factory=list)  # each later token's own decode step

    @property
    def per_token_s(self) -> float | None:
        """Median seconds per token after the first (None with a single token)."""
        return float(np.median(self.token_times_s)) if self.token_times_s else None


class VQAModel:
    def __init__(self, model: BitVLA, head: LanguageHead, tokenizer):
        self.model, self.head, self.tokenizer = model, head, tokenizer
        self.config = model.config
        # SigLIP preprocessing, no crop: a VLM question sees the whole frame.
        self._images = BitVLAProcessor(self.config, tokenizer, center_crop=False, image_pipeline="siglip")
        self._stop = stop_ids(self.config)

    # --- inputs ------------------------------------------------------------------------------

    def prompt(self, images: Sequence[np.ndarray], question: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ids (1, L), pixel values (1, N, 3, S, S) or None without images)."""
        if isinstance(images, np.ndarray):
            images = [images]
        ids = torch.tensor([question_prompt_ids(self.tokenizer, self.config, question, len(images))])
        expected = len(images) * self.config.vision.num_patches
        if int((ids == self.config.tokens.image).sum()) != expected:
            raise ValueError("the question contains the text of a special token (e.g. <|image_pad|>); remove it")
        pixels = torch.stack([self._images.preprocess_image(im) for im in images])[None] if images else None
        return ids, pixels

    # --- answers -----------------------------------------------------------------------------

    def stream_ids(self, images: Sequence[np.ndarray], question: str,
                   settings: GenerationSettings = GenerationSettings()) -> Iterator[int]:
        """Generated ids, the stop token included when one ends the answer."""
        yield from self._generate(*self.prompt(images, question), settings)

    def _generate(self, ids: torch.Tensor, pixels: torch.Tensor | None, settings: GenerationSettings) -> Iterator[int]:
        with torch.no_grad():
            embeds = prompt_embeds(self.model, ids, pixels)
        yield from generate_ids(self.model.llm, self.head, embeds, settings, self._stop)

    def stream(self, images: Sequence[np.ndarray], question: str,
               settings: GenerationSettings = GenerationSettings()) -> Iterator[str]:
        """The answer's text, piece by piece as tokens arrive (stop tokens are not text)."""
        yield from self._texts(self.stream_ids(images, question, settings))

    def ask(self, images: Sequence[np.ndarray], question: str, settings: GenerationSettings = GenerationSettings(),
            on_text: Callable[[str], None] | None = None) -> Answer:
        """The whole answer; ``on_text`` receives each text piece as soon as it is decoded."""
        start = time.perf_counter()
        ids, pixels = self.prompt(images, question)
        tokens, times, last = [], [], start

        def timed():
            nonlocal last
            for token in self._generate(ids, pixels, settings):
                now = time.perf_counter()
                times.append(now - last)
                last = now
                tokens.append(token)
                yield token

        pieces = []
        for piece in self._texts(timed()):
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
        stopped = tokens[-1] in self._stop
        return Answer(text="".join(pieces), token_ids=tokens, prompt_tokens=ids.shape[1], stopped=stopped,
                      first_token_s=times[0], token_times_s=times[1:])

    def _texts(self, token_ids: Iterator[int]) -> Iterator[str]:
        """Incremental detokenization: emit text once its bytes form whole characters."""
        kept: list[int] = []
        shown = ""
        for token in token_ids:
            if token in self._stop:
                break
            kept.append(token)
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # a multi-byte character split across tokens: wait
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
            shown = text
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        if len(text) > len(shown):
            yield text[len(shown):]


def prompt_embeds(model: BitVLA, ids: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
    """Token embeddings (1, L, H) with the projected image patches in the image-token rows, in order."""
    embeds = model.llm.embed_tokens(ids).to(model.dtype)
    if pixels is not None:
        feats = model.encode_images(pixels)
        embeds = embeds.masked_scatter((ids == model.config.tokens.image).unsqueeze(-1), feats.to(embeds.dtype))
    return embeds


def load_vqa(directory: str | Path, backend: str = "auto", dtype: torch.dtype | None = None) -> VQAModel:
    """A VQAModel from a packed folder, a published VLA folder or a released VLM folder (no action
    head). Published master weights are ternarized on load, as for the action path; they are read
    in ``dtype`` (default bf16, as the released files store them: an fp32 copy of the full-size
    model would need ~12 GB)."""
    directory = Path(directory)
    if checkpoint_format(directory) == PACKED_FORMAT:
        model = load_packed(directory, backend=backend, dtype=dtype)
    else:
        model = load_published(directory, dtype=dtype or torch.bfloat16, require_action_head=False)
        model.to_deploy(backend, embedding="float")
    head = language_head(directory, model)
    tok_dir = _tokenizer_dir(directory)
    if tok_dir is None:
        raise CheckpointError(f"{directory} has no tokenizer.json; answering questions needs the model's tokenizer")
    return VQAModel(model, head, load_tokenizer(tok_dir))
