"""RMSNorm and the squared-ReLU GLU of a BitNet layer: the torch reference and the fused C++ op.

The reference is what model/bitnet.py computes in training. The fused ops (csrc/norm_cpu.cpp,
built into the cpu kernel's extension) do each in one pass with the same rounding points; they
serve inference on CPU tensors where the extension is built and they measured faster than torch's
ops (kernels/autotune.py ``tune_elementwise``); docs/kernels.md has the figures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMPLS = ("torch", "fused")


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def relu2_glu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.relu(gate).square() * up


def _ops():
    """The cpu kernel's compiled extension (built on first use), or None."""
    from bitvla_ros.kernels import cpu

    return cpu._extension()


def fused_available() -> bool:
    return _ops() is not None


def _fusable(*tensors: torch.Tensor) -> bool:
    t0 = tensors[0]
    return (t0.device.type == "cpu" and t0.dtype in (torch.bfloat16, torch.float32)
            and all(t.dtype == t0.dtype for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, impl: str = "torch") -> torch.Tensor:
    if impl == "fused" and _fusable(x, weight):
        return _ops().rms_norm(x.contiguous(), weight.contiguous(), float(eps))
    return rms_norm_reference(x, weight, eps)


def relu2_glu(gate: torch.Tensor, up: torch.Tensor, impl: str = "torch") -> torch.Tensor:
    if impl == "fused" and _fusable(gate, up) and gate.shape == up.shape:
        return _ops().relu2_glu(gate.contiguous(), up.contiguous())
    return relu2_glu_reference(gate, up)
