"""Text generation on the BitNet decoder: a KV-cached causal loop kept apart from the model.

The model only provides the pieces (token embedding, decoder layers with a cache, language head);
this module owns the loop: one causal prefill pass over the prompt embeddings (text and image
rows), then one token per step, greedy or sampled (temperature, top-k, top-p, seeded), until a stop
token or max_new_tokens. Tokens are yielded as they are chosen so callers can stream them.
The action path is untouched: it never builds a cache or a language head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from bitvla_ros.model.bitnet import BitNetModel
from bitvla_ros.model.kv_cache import KVCache
from bitvla_ros.model.lm_head import LanguageHead


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy (argmax); > 0: sample from softmax(logits / temperature)
    top_k: int = 0  # sample among the k most likely tokens only (0: all)
    top_p: float = 1.0  # nucleus: the smallest set whose probability reaches top_p (1: all)
    seed: int | None = None  # sampling seed; None draws from torch's global generator

    def validate(self) -> "GenerationSettings":
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens is {self.max_new_tokens}; generate at least 1 token")
        if self.temperature < 0:
            raise ValueError(f"temperature is {self.temperature}; use 0 for greedy or a positive value to sample")
        if self.top_k < 0:
            raise ValueError(f"top_k is {self.top_k}; use 0 (off) or a positive count")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p is {self.top_p}; it must be in (0, 1]")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def choose_token(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """logits (B, V) fp32 → next ids (B,)."""
    if settings.greedy:
        return logits.argmax(-1)
    scores = logits / settings.temperature
    if 0 < settings.top_k < scores.shape[-1]:
        kth = scores.topk(settings.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p < 1:
        ordered, order = scores.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        # drop a token when the ones ranked above it already reach top_p (the first always stays)
        drop = probs.cumsum(-1) - probs >= settings.top_p
        scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)


def generate_ids(llm: BitNetModel, head: LanguageHead, prompt_embeds: torch.Tensor, settings: GenerationSettings,
                 stop: Sequence[int] = ()) -> Iterator[int]:
    """Yield generated ids one by one for a (1, L, H) prompt; a stop id is yielded, then it ends."""
    settings.validate()
    if prompt_embeds.dim() != 3 or prompt_embeds.shape[0] != 1:
        raise ValueError(f"generation takes one prompt (1, L, hidden); got shape {tuple(prompt_embeds.shape)}")
    positions = llm.config.max_position_embeddings
    length = prompt_embeds.shape[1]
    if length >= positions:
        raise ValueError(f"the prompt is {length} tokens; the model has {positions} positions, none left to answer")
    budget = min(settings.max_new_tokens, positions - length)
    generator = None
    if not settings.greedy and settings.seed is not None:
        generator = torch.Generator(device=prompt_embeds.device).manual_seed(settings.seed)
    dtype = prompt_embeds.dtype
    # The last token's key/value is never needed: it is not fed back.
    cache = KVCache(llm.config, length + budget - 1, dtype=dtype, device=prompt_embeds.device)
    stop = set(stop)
    with torch.no_grad():
        hidden = llm(prompt_embeds, cache=cache)[:, -1]
        for step in range(budget):
            token = choose_token(head(hidden), settings, generator)
            yield int(token)
            if int(token) in stop or step == budget - 1:
                return
            hidden = llm(llm.embed_tokens(token[:, None]).to(dtype), cache=cache)[:, -1]
