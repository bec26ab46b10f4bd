"""Keys and values of past tokens for causal decoding (text generation only).

The action path never uses it: BitVLA's one-pass forward attends bidirectionally over the whole
sequence at once. For generation each decoder layer appends its new keys/values here and attends
over everything stored so far. Buffers are allocated once for the longest sequence the caller
asks for, so a decode step copies one row per layer instead of re-concatenating the history.
"""

from __future__ import annotations

import torch

from bitvla_ros.model.config import TextConfig


class LayerCache:
    """One decoder layer's slice of a KVCache."""

    def __init__(self, owner: "KVCache", keys: torch.Tensor, values: torch.Tensor):
        self.owner, self.keys, self.values = owner, keys, values

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, kv_heads, n, head_dim) new keys/values after the committed ones; return all of them."""
        start, n = self.owner.length, k.shape[2]
        end = start + n
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    def __init__(self, config: TextConfig, max_length: int, batch: int = 1, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        if max_length > config.max_position_embeddings:
            raise ValueError(f"a {max_length}-token sequence exceeds the model's {config.max_position_embeddings} "
                             "positions; ask for fewer new tokens or shorten the prompt")
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_length, config.head_dim)
        self._keys = torch.zeros(shape, dtype=dtype, device=device)
        self._values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_length = max_length
        self.length = 0  # tokens stored and committed
        self.layers = [LayerCache(self, self._keys[i], self._values[i]) for i in range(config.num_hidden_layers)]

    def reserve(self, n: int) -> int:
        """Check that n more tokens fit; the position of the first of them."""
        if self.length + n > self.max_length:
            raise ValueError(f"the KV cache holds {self.max_length} tokens; {self.length} stored, {n} more do not fit")
        return self.length

    def advance(self, n: int) -> None:
        self.length += n
