"""SigLIP-shaped vision encoder with BitLinear layers (docs/model.md).

Patch conv + learned positions (no CLS), pre-LN layers, tanh-GELU MLP. The output is the last
used layer's hidden states: no post-LayerNorm, all patches kept. Whether the linears are ternary
is the config's choice (bitsiglip vs the full-precision SigLIP variant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitvla_ros.kernels import attention
from bitvla_ros.model.bitlinear import BitLinear
from bitvla_ros.model.config import VisionConfig


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2) + self.position_embedding.weight


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        d, q = cfg.hidden_size, cfg.quantized
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (BitLinear(d, d, quantize=q) for _ in range(4))
        self.attention_impl = attention.DEFAULT  # kernels/attention.py; BitVLA.set_attention sets it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = attention.get(self.attention_impl)(q, k, v)  # all patches attend to all patches
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = BitLinear(cfg.hidden_size, cfg.intermediate_size, quantize=cfg.quantized)
        self.fc2 = BitLinear(cfg.intermediate_size, cfg.hidden_size, quantize=cfg.quantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisionLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    """pixels (B, 3, S, S) in [-1, 1] → patch features (B, (S/p)², hidden)."""

    def __init__(self, cfg: VisionConfig, num_layers: int | None = None):
        super().__init__()
        self.config = cfg
        self.embeddings = VisionEmbeddings(cfg)
        self.layers = nn.ModuleList(VisionLayer(cfg) for _ in range(num_layers or cfg.num_hidden_layers))

    def forward(self, pixels: torch.Tensor, output_hidden_states: bool = False):
        x = self.embeddings(pixels)
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return (x, states) if output_hidden_states else x
