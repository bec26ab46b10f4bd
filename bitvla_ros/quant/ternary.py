"""BitNet b1.58 quantizers (docs/quantization.md).

Weights: absmean ternary, one scale per matrix. Activations: absmax int8, one scale per token.
Both are computed in fp32 and have straight-through gradients (the backward passes the incoming
gradient unchanged, no masking), so the same functions serve training and inference.
"""

from __future__ import annotations

import torch

# Floor for both scale denominators, as in the published quantizers.
SCALE_EPS = 1e-5


def _wide(t: torch.Tensor) -> torch.Tensor:
    """The quantizers work in fp32, or in fp64 when given fp64 (reference comparisons)."""
    return t.detach() if t.dtype == torch.float64 else t.detach().float()


def absmean_scale(weight: torch.Tensor) -> torch.Tensor:
    """α = max(mean|W|, 1e-5) over the whole matrix, as a 0-d fp32 (or fp64) tensor."""
    return _wide(weight).abs().mean().clamp(min=SCALE_EPS)


def ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary codes in {-1, 0, +1} (int8) and the fp32 scale α, so that W ≈ codes · α."""
    alpha = absmean_scale(weight)
    codes = torch.round(_wide(weight) / alpha).clamp_(-1, 1).to(torch.int8)
    return codes, alpha


def quantize_activations_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8: returns (int8 codes, fp32 scale s with x ≈ codes / s).

    The scale has the shape of ``x`` with the last dimension kept as 1. Since |x·s| ≤ 127 the
    codes use the symmetric range [-127, 127].
    """
    xf = _wide(x)
    scale = 127.0 / xf.abs().amax(dim=-1, keepdim=True).clamp(min=SCALE_EPS)
    codes = torch.round(xf * scale).clamp_(-128, 127).to(torch.int8)
    return codes, scale


class _WeightFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight):
        codes, alpha = ternarize(weight)
        return (codes.to(alpha.dtype) * alpha).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ActivationFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        # The same values as quantize_activations_int8 then codes / scale, without the int8 round
        # trip: this runs on every linear input in training, where memory traffic is the cost.
        xf = _wide(x)
        scale = 127.0 / xf.abs().amax(dim=-1, keepdim=True).clamp(min=SCALE_EPS)
        return torch.round(xf * scale).clamp_(-128, 127).div_(scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def weight_fake_quant(weight: torch.Tensor) -> torch.Tensor:
    """W_q = clamp(round(W/α), -1, 1)·α in the weight's dtype, with a straight-through gradient."""
    return _WeightFakeQuant.apply(weight)


def activation_fake_quant(x: torch.Tensor) -> torch.Tensor:
    """x_q = round(x·s)/s per token in x's dtype, with a straight-through gradient."""
    return _ActivationFakeQuant.apply(x)


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8 for lookup tables such as the token embedding: (int8 rows, fp32 scale
    per row) with row ≈ codes · scale. Unlike the activation quantizer the scale multiplies."""
    wf = weight.detach().float()
    scale = wf.abs().amax(dim=-1).clamp(min=SCALE_EPS) / 127.0
    codes = torch.round(wf / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scale
