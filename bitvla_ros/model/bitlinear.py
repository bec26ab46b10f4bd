"""BitLinear: the one quantized linear of the model (vision encoder and LLM alike).

Two modes of the same module:
- train: a float master ``weight``; the forward fake-quantizes weight (absmean ternary) and input
  (absmax int8 per token) with straight-through gradients, exactly as the published model runs.
- deploy: only ``qweight`` (2-bit codes, uint8) and ``weight_scale`` (fp32) are held, never a float
  copy of the weight; the forward is an integer matmul by the chosen kernel backend.
``quantize=False`` makes it a plain linear (the full-precision SigLIP variant); such a layer has
no deploy mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bitvla_ros.kernels import get_backend
from bitvla_ros.quant import (
    PackedTernary,
    activation_fake_quant,
    pack_ternary,
    packed_row_bytes,
    ternarize,
    weight_fake_quant,
)


class BitLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, quantize: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.quantize = in_features, out_features, quantize
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self._backend_request = "auto"
        self._backend = None
        self._prepared = None
        if self.weight.device.type != "meta":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @property
    def deployed(self) -> bool:
        return "qweight" in self._buffers

    # --- mode switches -----------------------------------------------------------------------

    def to_deploy(self, backend: str = "auto") -> "BitLinear":
        """Ternarize the master weight into packed codes + scale and drop the float weight."""
        if not self.quantize:
            raise ValueError("a full-precision (quantize=False) BitLinear has no packed deploy mode")
        if self.deployed:
            return self
        codes, alpha = ternarize(self.weight)
        self._become_packed(pack_ternary(codes), alpha)
        self.set_backend(backend)
        return self

    def _become_packed(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        del self.weight
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", scale.float().reshape(()))

    @classmethod
    def packed(cls, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> "BitLinear":
        """A deploy-mode layer with empty packed storage, to be filled from a checkpoint."""
        layer = cls(in_features, out_features, bias=bias, device="meta", dtype=dtype)
        layer._become_packed(torch.empty(out_features, packed_row_bytes(in_features), dtype=torch.uint8, device=device),
                             torch.ones((), device=device))
        if bias:
            layer.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        return layer

    def set_backend(self, name: str = "auto") -> None:
        """Choose the kernel backend now (errors surface here), for the codes' current device.
        If the layer later runs on another device type, ``name`` is resolved again there."""
        device = self.qweight.device if self.deployed and self.qweight.device.type != "meta" else "cpu"
        self._backend = get_backend(name, device)
        self._backend_request = name
        self._prepared = None

    @property
    def backend_name(self) -> str | None:
        return self._backend.name if self._backend is not None else None

    def packed_weight(self) -> PackedTernary:
        return PackedTernary(self.qweight, self.weight_scale, self.in_features)

    def _apply(self, fn, *args, **kwargs):
        # A device move or cast leaves a backend's prepared copy behind: rebuild it lazily.
        self._prepared = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        # New packed codes invalidate a backend's prepared copy.
        self._prepared = None
        super()._load_from_state_dict(*args, **kwargs)

    # --- forward -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            if self._backend is None or x.device.type not in getattr(self._backend, "devices", (x.device.type,)):
                self._backend = get_backend(self._backend_request, x.device)
                self._prepared = None
            if self._prepared is None:
                self._prepared = self._backend.prepare(self.packed_weight())
            # A backend may round its fp32 result to x's dtype itself (one pass less over y).
            fused = getattr(self._backend, "matmul_to", None)
            y = fused(x, self._prepared, x.dtype) if fused else self._backend.matmul(x, self._prepared).to(x.dtype)
            return y + self.bias.to(x.dtype) if self.bias is not None else y
        if not self.quantize:
            return F.linear(x, self.weight, self.bias)
        return F.linear(activation_fake_quant(x), weight_fake_quant(self.weight), self.bias)

    def extra_repr(self) -> str:
        mode = "deploy" if self.deployed else ("train" if self.quantize else "full-precision")
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, mode={mode}"
