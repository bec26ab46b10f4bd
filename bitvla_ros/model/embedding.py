"""Token embedding stored as int8 rows with one fp32 scale each (deploy form).

The bf16 embedding (128,264 × 2,560) would be about half of the packed model; int8 rows halve it.
Only a few dozen rows are read per prompt, so a table loaded from a packed file is read row by
row from that file (``read_rows_from``): a lookup through the memory map would make the kernel map
whole page-cache folios around each row (measured: 56 rows put ~93 MB of the table in RSS).
"""

from __future__ import annotations

import os

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
        self._row_file: tuple[str, int, int] | None = None  # (path, byte offset, data_ptr it mirrors)

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> "QuantizedEmbedding":
        q = cls(embedding.num_embeddings, embedding.embedding_dim, device="meta")
        q.qweight, q.row_scale = quantize_rows_int8(embedding.weight)
        return q

    def read_rows_from(self, path: str | os.PathLike, offset: int) -> None:
        """Look rows up with pread from ``path``, where ``qweight``'s bytes start at ``offset``,
        instead of through ``qweight``'s pages. Applies while ``qweight`` is that same CPU tensor
        (moving or replacing it goes back to ordinary lookups)."""
        self._row_file = (os.fspath(path), int(offset), self.qweight.data_ptr())

    def _reads_file(self) -> bool:
        return (self._row_file is not None and self.qweight.device.type == "cpu"
                and self.qweight.data_ptr() == self._row_file[2])

    def _file_rows(self, ids: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(ids, return_inverse=True)
        if unique.numel() and (int(unique[0]) < 0 or int(unique[-1]) >= self.num_embeddings):
            raise IndexError(f"token id out of range: the embedding has {self.num_embeddings} rows, "
                             f"got ids {int(unique[0])}..{int(unique[-1])}")
        path, offset, _ = self._row_file
        dim = self.embedding_dim
        with open(path, "rb") as f:
            data = b"".join(os.pread(f.fileno(), dim, offset + i * dim) for i in unique.tolist())
        table = torch.frombuffer(bytearray(data), dtype=torch.int8).view(-1, dim) if data else \
            torch.empty(0, dim, dtype=torch.int8)
        return table[inverse]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """fp32 rows; the caller casts to its compute dtype."""
        rows = self._file_rows(ids) if self._reads_file() else F.embedding(ids, self.qweight)
        return rows.float() * self.row_scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"
