"""Multi-head attention of the one-pass forward, two ways, chosen by measurement per machine.

- ``sdpa``: torch's scaled_dot_product_attention (on a CPU its flash kernel), grouped-query
  heads handled by ``enable_gqa``. The reference: ``gemm`` is tested against it.
- ``gemm``: two batched GEMMs around a softmax (accumulated in fp32). The query heads that share a key/value
  head are stacked into one (heads_per_group x tokens) matrix, so K and V are never repeated.
  It makes the (tokens x tokens) scores explicit (20 x 626 x 626 fp32 = 31 MB at full size),
  which the flash kernel avoids, in exchange for the GEMM library's bf16 units.

Which is faster is the CPU's and the dtype's business, not a rule: on a 2-core AMD EPYC
(AVX-512 BF16) at the LLM's shape (20 query heads, 5 key/value heads, 626 tokens, head 128) the
GEMM form took 9.8 ms in bf16 against the flash kernel's 23.7 ms, while in fp32 the flash kernel
won (23 vs 30 ms). ``kernels.autotune.tune_attention`` times both on the model's shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMPLS = ("sdpa", "gemm")
DEFAULT = "sdpa"


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, H, N, D), k/v (B, Hkv, L, D), mask bool broadcastable to (B, H, N, L) (True = attend)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])


def gemm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same as ``sdpa``, as scores = (q/√D)·Kᵀ, softmax, then ·V."""
    b, h, n, d = q.shape
    kvh, length = k.shape[1], k.shape[2]
    group = h // kvh
    scores = torch.matmul((q * d ** -0.5).reshape(b, kvh, group * n, d), k.transpose(-1, -2))
    if mask is not None:
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        # (B, 1|H, N|1, L) → (B, Hkv, group, N, L) so each query row meets its own mask row
        m = mask.reshape(mask.shape[0], -1 if mask.shape[1] == 1 else kvh, 1 if mask.shape[1] == 1 else group,
                         mask.shape[2], length)
        scores = scores.view(b, kvh, group, n, length).masked_fill(~m, float("-inf")).view(b, kvh, group * n, length)
    probs = torch.softmax(scores, dim=-1)  # torch accumulates a bf16 softmax in fp32 and writes bf16
    return torch.matmul(probs, v).view(b, h, n, d)


_FUNCTIONS = {"sdpa": sdpa, "gemm": gemm}


def get(name: str):
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown attention implementation {name!r}; expected one of {IMPLS}")
    return _FUNCTIONS[name]
