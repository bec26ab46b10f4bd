"""The full-precision pieces around the two towers (docs/model.md).

- Projector: vision features → LLM width (Linear, exact GELU, Linear).
- ProprioProjector: normalized proprio → one LLM token (Linear, exact GELU, Linear).
- L1ActionHead: the OFT MLP-ResNet that maps one timestep's action_dim hidden states, concatenated,
  to action_dim normalized values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    def __init__(self, vision_dim: int, text_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


class ProprioProjector(nn.Module):
    def __init__(self, proprio_dim: int, text_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, text_dim)
        self.fc2 = nn.Linear(text_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ResidualBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.fc(self.norm(x)))


class L1ActionHead(nn.Module):
    """(B, chunk, action_dim · hidden) → (B, chunk, action_dim), trained with an L1 loss."""

    def __init__(self, hidden: int, action_dim: int, num_blocks: int = 2):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(action_dim * hidden)
        self.fc1 = nn.Linear(action_dim * hidden, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, action_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(self.layer_norm1(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))
