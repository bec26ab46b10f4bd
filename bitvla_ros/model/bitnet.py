"""BitNet b1.58 decoder run as BitVLA runs it: one bidirectional pass, no KV cache (docs/model.md).

Per layer: RMSNorm → q/k/v (GQA, RoPE rotate-half) → attention → attn_sub_norm → o_proj, then
RMSNorm → gate/up → relu(gate)² · up → ffn_sub_norm → down. All seven linears are BitLinear.
The returned hidden states are taken after the final RMSNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitvla_ros.model.bitlinear import BitLinear
from bitvla_ros.model.config import TextConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


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

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        out = out.transpose(1, 2).reshape(b, n, -1)
        return self.o_proj(self.attn_sub_norm(out))


class BitNetMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = BitLinear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = BitLinear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.ffn_sub_norm = RMSNorm(cfg.intermediate_size, cfg.rms_norm_eps)
        self.down_proj = BitLinear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        # Squared-ReLU GLU; the config's hidden_act is ignored, as in the published module.
        return self.down_proj(self.ffn_sub_norm(F.relu(self.gate_proj(x)).square() * self.up_proj(x)))


class BitNetLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = BitNetAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = BitNetMLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
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
                causal: bool = False) -> torch.Tensor:
        """embeds (B, L, H); attention_mask (B, L) with 1 for real tokens and 0 for padding.

        Attention is bidirectional over every non-pad token, as BitVLA's one-pass decode needs;
        ``causal=True`` exists to compare with a causal reference implementation.
        """
        b, n, _ = embeds.shape
        positions = torch.arange(n, device=embeds.device)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, embeds.dtype)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # keys only: pads are never attended to
        if causal:
            tri = torch.ones(n, n, dtype=torch.bool, device=embeds.device).tril()
            mask = tri if mask is None else mask & tri
        x = embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)
