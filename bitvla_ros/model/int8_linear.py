"""A linear layer stored as int8 rows with one fp32 scale per output (weight-only int8).

For the float pieces around the ternary towers (projectors, action head): at full size they are
about 150 MB in bf16, 11 % of the deployed model; int8 halves them. Only the weight is rounded:
activations stay in the compute dtype, and the integer codes enter the matmul exactly (bf16 holds
every integer up to 256) with the scale applied to the output, so the error is the weight's
per-row rounding alone (at most half a step, scale / 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitvla_ros.quant import quantize_rows_int8

# Output rows dequantized at a time: keeps the transient float copy small (256 × 17,920 bf16 =
# 9 MB for the action head's widest layer) instead of a whole float weight during the forward.
ROWS_PER_BLOCK = 256


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.qweight, layer.weight_scale = quantize_rows_int8(linear.weight)
        layer.qweight, layer.weight_scale = layer.qweight.to(linear.weight.device), layer.weight_scale.to(linear.weight.device)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(*x.shape[:-1], self.out_features, dtype=x.dtype, device=x.device)
        for r0 in range(0, self.out_features, ROWS_PER_BLOCK):
            r1 = min(r0 + ROWS_PER_BLOCK, self.out_features)
            codes = self.qweight[r0:r1].to(x.dtype)
            out[..., r0:r1] = F.linear(x, codes) * self.weight_scale[r0:r1].to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The float weight this layer computes with (fp32), for tests and comparisons."""
        return self.qweight.float() * self.weight_scale[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 rows"
