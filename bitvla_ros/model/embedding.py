"""Token embedding stored as int8 rows with one fp32 scale each (deploy form).

The bf16 embedding (128,264 × 2,560) would be about half of the packed model; int8 rows halve it,
and since only a few dozen rows are read per prompt, a memory-mapped table stays mostly on disk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitvla_ros.quant import quantize_rows_int8


class QuantizedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("qweight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("row_scale", torch.ones(num_embeddings, device=device))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> "QuantizedEmbedding":
        q = cls(embedding.num_embeddings, embedding.embedding_dim, device="meta")
        q.qweight, q.row_scale = quantize_rows_int8(embedding.weight)
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """fp32 rows; the caller casts to its compute dtype."""
        return F.embedding(ids, self.qweight).float() * self.row_scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"
