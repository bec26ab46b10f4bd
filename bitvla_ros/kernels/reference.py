"""The oracle backend: unpack the ternary codes, then an exact integer matmul carried in fp32.

Every other backend is tested against this one. It keeps the weight packed between calls and
unpacks it per call, so it is slow but never holds a float copy of a ternary matrix.
"""

from __future__ import annotations

import torch

from bitvla_ros.quant import PackedTernary, quantize_activations_int8, unpack_ternary


def ternary_matmul_reference(x: torch.Tensor, weight: PackedTernary) -> torch.Tensor:
    """y = x · Wᵀ with int8 per-token activations and a ternary W, returned in fp32.

    Integer products summed in fp32 are exact while |Σ| < 2²⁴, i.e. for K up to 132k at 127·1.
    """
    k = weight.in_features
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the ternary weight expects {k}")
    rows = x.reshape(-1, k)
    xq, xs = quantize_activations_int8(rows)
    w = unpack_ternary(weight.codes, k, torch.float32)
    acc = xq.float() @ w.t()
    y = acc * (weight.scale / xs)
    return y.reshape(*x.shape[:-1], weight.out_features)


class ReferenceBackend:
    name = "reference"
    devices = ("cpu", "cuda", "meta")  # plain torch ops: meta too (shape-only runs, device tests)

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def prepare(weight: PackedTernary) -> PackedTernary:
        return weight

    @staticmethod
    def matmul(x: torch.Tensor, prepared: PackedTernary) -> torch.Tensor:
        return ternary_matmul_reference(x, prepared)
