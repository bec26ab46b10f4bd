"""BitNet b1.58 decoder run as BitVLA runs it: one bidirectional pass, no KV cache (docs/model.md).
Text generation runs the same layers causally, step by step, with a KVCache (model/kv_cache.py).

Per layer: RMSNorm → q/k/v (GQA, RoPE rotate-half) → attention → attn_sub_norm → o_proj, then
RMSNorm → gate/up → relu(gate)² · up → ffn_sub_norm → down. All seven linears are BitLinear.
The returned hidden states are taken after the final RMSNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitvla_ros.kernels import attention, elementwise
from bitvla_ros.model.bitlinear import BitLinear
from bitvla_ros.model.config import TextConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.elementwise_impl = "torch"  # "fused" on a CPU deployment (BitVLA.set_backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elementwise.rms_norm(x, self.weight, self.eps, self.elementwise_impl)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables (…, L, head_dim) for rotate-half RoPE, computed in fp32."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[..., None] * inv_freq
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class BitNetAttention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = BitLinear(d, cfg.num_attention_heads * hd, bias=False)
        self.k_proj = BitLinear(d, cfg.num_key_value_heads * hd, bias=False)
        self.v_proj = BitLinear(d, cfg.num_key_value_heads * hd, bias=False)
        self.attn_sub_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.o_proj = BitLinear(cfg.num_attention_heads * hd, d, bias=False)
        self.attention_impl = attention.DEFAULT  # kernels/attention.py; BitVLA.set_attention sets it

    def forward(self, x, cos, sin, mask, cache=None):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # generation: attend over the stored past as well
            k, v = cache.update(k, v)
        out = attention.get(self.attention_impl)(q, k, v, mask)
        out = out.transpose(1, 2).reshape(b, n, -1)
        return self.o_proj(self.attn_sub_norm(out))


class BitNetMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = BitLinear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = BitLinear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.ffn_sub_norm = RMSNorm(cfg.intermediate_size, cfg.rms_norm_eps)
        self.down_proj = BitLinear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.elementwise_impl = "torch"  # "fused" on a CPU deployment (BitVLA.set_backend)

    def forward(self, x):
        # Squared-ReLU GLU; the config's hidden_act is ignored, as in the published module.
        return self.down_proj(self.ffn_sub_norm(elementwise.relu2_glu(self.gate_proj(x), self.up_proj(x),
                                                                   self.elementwise_impl)))


class BitNetLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = BitNetAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = BitNetMLP(cfg)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class BitNetModel(nn.Module):
    """Token embedding + decoder layers + final norm. ``forward`` takes embeddings, not ids,
    because BitVLA splices image, proprio and zeroed action rows in before the first layer."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(BitNetLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                causal: bool = False, cache=None) -> torch.Tensor:
        """embeds (B, L, H); attention_mask (B, L) with 1 for real tokens and 0 for padding.

        Attention is bidirectional over every non-pad token, as BitVLA's one-pass decode needs;
        ``causal=True`` exists to compare with a causal reference implementation.
        With a ``cache`` (a KVCache, for text generation) the pass is causal and continues the
        cached sequence: positions start after the stored tokens, which stay visible.
        """
        b, n, _ = embeds.shape
        start = 0
        if cache is not None:
            if attention_mask is not None:
                raise ValueError("cached (generation) passes take unpadded sequences; pass attention_mask=None")
            start, causal = cache.reserve(n), True
        positions = torch.arange(start, start + n, device=embeds.device)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, embeds.dtype)
        mask = None
        # Keys only: pads are never attended to. A CPU pass without pads drops the mask (one
        # masking pass less per layer); on a GPU the check would sync and break graph capture.
        if attention_mask is not None and not (attention_mask.device.type == "cpu" and bool(attention_mask.all())):
            mask = attention_mask.bool()[:, None, None, :]
        if causal and not (cache is not None and n == 1):  # one new token sees every stored one
            tri = torch.ones(n, start + n, dtype=torch.bool, device=embeds.device).tril(diagonal=start)
            mask = tri if mask is None else mask & tri
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask) if cache is None else layer(x, cos, sin, mask, cache.layers[i])
        if cache is not None:
            cache.advance(n)
        return self.norm(x)
