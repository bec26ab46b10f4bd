"""The language head: final hidden states → vocabulary logits, for text generation only.

BitNet ties it to the token embedding (tie_word_embeddings), so in a folder that stores no
separate lm_head the embedding rows *are* the head. The action path never builds one: the head
starts as a view of the memory-mapped weight (embedding or stored lm_head) and is materialized,
once, in the compute dtype only when generation first runs. A float weight already in that dtype
is used in place (no copy); int8 embedding rows are dequantized in chunks into one new tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_DEQUANT_ROWS = 8192  # int8 rows dequantized at a time (no full fp32 temporary)


class LanguageHead:
    def __init__(self, weight: torch.Tensor, row_scale: torch.Tensor | None = None, source: str = "lm_head"):
        """``weight`` (vocab, hidden): float, or int8 rows with one fp32 ``row_scale`` each."""
        if weight.dim() != 2:
            raise ValueError(f"a language head weight is (vocab, hidden), got shape {tuple(weight.shape)}")
        if (row_scale is None) == (weight.dtype == torch.int8):
            raise ValueError("int8 head rows need their row_scale, and float rows take none")
        self._source, self._row_scale, self.source = weight, row_scale, source
        self._weight: torch.Tensor | None = None

    @classmethod
    def tied(cls, embedding: nn.Module) -> "LanguageHead":
        """The head as the token embedding (nn.Embedding or QuantizedEmbedding)."""
        if isinstance(embedding, nn.Embedding):
            return cls(embedding.weight.detach(), source="tied embedding")
        return cls(embedding.qweight, embedding.row_scale, source="tied embedding (int8 rows)")

    @property
    def vocab_size(self) -> int:
        return self._source.shape[0]

    @property
    def materialized(self) -> bool:
        return self._weight is not None

    def weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        w = self._weight
        if w is None or w.dtype != dtype or w.device != device:
            w = self._materialize(dtype, device)
            self._weight = w
        return w

    def _materialize(self, dtype, device) -> torch.Tensor:
        src = self._source
        if self._row_scale is None:
            return src.to(device=device, dtype=dtype)  # no copy when it already matches
        out = torch.empty(src.shape, dtype=dtype, device=device)
        for i in range(0, src.shape[0], _DEQUANT_ROWS):
            rows = src[i: i + _DEQUANT_ROWS].to(device).float()
            out[i: i + _DEQUANT_ROWS] = (rows * self._row_scale[i: i + _DEQUANT_ROWS, None].to(device)).to(dtype)
        return out

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., H) → logits (..., vocab) in fp32, computed in the hidden states' dtype."""
        return F.linear(hidden, self.weight(hidden.dtype, hidden.device)).float()
