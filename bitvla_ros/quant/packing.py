"""2-bit packing of ternary weights: 4 codes a byte, one fp32 scale per matrix.

Layout (our deployment format): a weight of shape (N, K) becomes uint8 (N, ceil(K/4)). Each row is
packed on its own, zero-padded to a multiple of 4; code c = w + 1 ∈ {0, 1, 2}; element j of a
group of four sits in bits 2j..2j+1. Rows stay whole, so a kernel can stream one output row's
weights from one contiguous run of bytes. For K divisible by 4 this is byte-for-byte the
flatten-by-4 layout of the BitVLA fork (docs/quantization.md); it is *not* the HF `bitnet`
integration's row-block layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_SHIFTS = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)


def packed_row_bytes(in_features: int) -> int:
    return (in_features + 3) // 4


@dataclass(frozen=True)
class PackedTernary:
    """A ternary matrix W ≈ unpack(codes) · scale, stored at 2 bits a weight."""

    codes: torch.Tensor  # uint8 (out_features, ceil(in_features / 4))
    scale: torch.Tensor  # fp32, 0-d
    in_features: int

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)


def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """int codes in {-1, 0, 1} of shape (N, K) → uint8 (N, ceil(K/4))."""
    if codes.dim() != 2:
        raise ValueError(f"pack_ternary expects a 2-D (out, in) matrix, got shape {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("pack_ternary expects codes in {-1, 0, +1}; ternarize the weight first")
    n, k = codes.shape
    kp = packed_row_bytes(k)
    c = torch.zeros(n, kp * 4, dtype=torch.uint8, device=codes.device)
    c[:, :k] = (codes.to(torch.int16) + 1).to(torch.uint8)
    c = c.view(n, kp, 4) << _SHIFTS.to(codes.device)
    return c[..., 0] | c[..., 1] | c[..., 2] | c[..., 3]


def unpack_ternary(packed: torch.Tensor, in_features: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """uint8 (N, ceil(K/4)) → codes in {-1, 0, 1} of shape (N, K) in ``dtype``."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"unpack_ternary expects a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    if packed.shape[1] != packed_row_bytes(in_features):
        raise ValueError(
            f"packed rows hold {packed.shape[1] * 4} codes but in_features={in_features} "
            f"needs {packed_row_bytes(in_features)} bytes a row"
        )
    n = packed.shape[0]
    fields = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 3
    codes = fields.view(n, -1)[:, :in_features].to(dtype)
    return codes.sub_(1)  # in place: one (N, K) temporary, not two
