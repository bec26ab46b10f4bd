"""The int8 fallback: ternary codes held as int8 and an int8 × int8 → int32 matmul.

For machines the packed paths do not cover (a GPU without the Triton W2A8 kernels, a CPU where
the C++ kernel cannot be built). bitsandbytes' int8 matmul runs it on CUDA; `torch._int_mm`
(oneDNN, VNNI where the CPU has it) on the CPU. It pays for its reach in memory: `prepare`
unpacks each matrix to int8, four times the packed size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bitvla_ros.quant import PackedTernary, quantize_activations_int8, unpack_ternary

# bitsandbytes' CUDA int8 matmul wants K in multiples of 4; 16 keeps every vendor kernel happy.
_CUDA_K_MULTIPLE = 16


@dataclass(frozen=True)
class Int8Weight:
    codes: torch.Tensor  # int8 (N, K_padded), K-padding is zero
    scale: torch.Tensor
    in_features: int

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]


@functools.lru_cache(maxsize=1)
def _cpu_int_mm_works() -> bool:
    try:
        a = torch.ones(1, 8, dtype=torch.int8)
        return int(torch._int_mm(a, a.t())[0, 0]) == 8
    except (RuntimeError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def _bitsandbytes():
    try:
        import bitsandbytes.functional as bnb_f
    except ImportError:
        return None
    return bnb_f


class Int8Backend:
    name = "int8"
    devices = ("cpu", "cuda")
    # On CPUs `_int_mm` is fast only with AVX-512 VNNI (and slower than the reference without it):
    # `auto` takes it for CUDA tensors only; on a CPU it is there to be chosen by name.
    auto_devices = ("cuda",)

    @staticmethod
    def available() -> bool:
        return _cpu_int_mm_works() or (torch.cuda.is_available() and _bitsandbytes() is not None)

    @staticmethod
    def unavailable_reason() -> str:
        return "torch._int_mm does not run here and bitsandbytes has no CUDA device"

    @staticmethod
    def prepare(weight: PackedTernary) -> Int8Weight:
        codes = unpack_ternary(weight.codes, weight.in_features, torch.int8)
        if codes.is_cuda and codes.shape[1] % _CUDA_K_MULTIPLE:
            codes = F.pad(codes, (0, -codes.shape[1] % _CUDA_K_MULTIPLE))
        return Int8Weight(codes.contiguous(), weight.scale, weight.in_features)

    @staticmethod
    def matmul(x: torch.Tensor, w: Int8Weight) -> torch.Tensor:
        k = w.in_features
        if x.shape[-1] != k:
            raise ValueError(f"input has {x.shape[-1]} features, the ternary weight expects {k}")
        xq, xs = quantize_activations_int8(x.reshape(-1, k))
        if xq.is_cuda:
            if w.codes.shape[1] != k:
                xq = F.pad(xq, (0, w.codes.shape[1] - k))
            bnb_f = _bitsandbytes()
            acc = bnb_f.int8_linear_matmul(xq, w.codes) if bnb_f is not None else torch._int_mm(xq, w.codes.t())
        else:
            acc = torch._int_mm(xq, w.codes.t())
        y = acc.float() * (w.scale / xs)
        return y.reshape(*x.shape[:-1], w.out_features)
