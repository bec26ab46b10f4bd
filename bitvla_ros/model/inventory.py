"""Parameters and bytes per component, for `bitvla info` and the memory benchmark.

Works on meta-device models, so the full-size preset is counted without allocating it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from bitvla_ros.model.bitvla import BitVLA, cast_parameters
from bitvla_ros.model.config import BitVLAConfig
from bitvla_ros.model.meta import meta_skeleton

COMPONENTS = (
    "LLM ternary linears",
    "LLM token embedding",
    "LLM norms",
    "vision ternary linears",
    "vision embeddings, norms, biases",
    "projector",
    "action head",
    "proprio projector",
)

_TERNARY = re.compile(r"\.(self_attn\.(q|k|v|o|out)_proj|mlp\.(fc1|fc2|gate_proj|up_proj|down_proj))\."
                      r"(weight|qweight|weight_scale)$")


def component_of(name: str) -> str:
    if name.startswith("llm."):
        if name.startswith("llm.embed_tokens."):
            return "LLM token embedding"
        return "LLM ternary linears" if _TERNARY.search(name) else "LLM norms"
    if name.startswith("vision."):
        return "vision ternary linears" if _TERNARY.search(name) else "vision embeddings, norms, biases"
    if name.startswith("projector."):
        return "projector"
    if name.startswith("action_head."):
        return "action head"
    if name.startswith("proprio_projector."):
        return "proprio projector"
    raise KeyError(f"no component for tensor {name}")


@dataclass
class ComponentSize:
    params: int = 0
    bf16_bytes: int = 0
    packed_bytes: int = 0


def _tensors(model: torch.nn.Module):
    yield from model.named_parameters()
    yield from model.named_buffers()


def inventory(config: BitVLAConfig, embedding: str = "int8", heads: str = "float") -> dict[str, ComponentSize]:
    """Params (master weights), bf16 master bytes and packed-folder bytes per component."""
    sizes = {c: ComponentSize() for c in COMPONENTS}
    with meta_skeleton():
        master = BitVLA(config)
    for name, t in _tensors(master):
        s = sizes[component_of(name)]
        s.params += t.numel()
        s.bf16_bytes += t.numel() * 2
    packed = BitVLA.deploy_skeleton(config, embedding=embedding, heads=heads)
    cast_parameters(packed, torch.bfloat16)
    for name, t in _tensors(packed):
        sizes[component_of(name)].packed_bytes += t.numel() * t.element_size()
    if not config.use_proprio:
        sizes.pop("proprio projector")
    return sizes


def format_inventory(sizes: dict[str, ComponentSize]) -> str:
    rows = [f"{'component':34s} {'params':>14s} {'bf16 master':>12s} {'packed':>12s}"]
    total = ComponentSize()
    for name, s in sizes.items():
        rows.append(f"{name:34s} {s.params:14,d} {_mb(s.bf16_bytes):>12s} {_mb(s.packed_bytes):>12s}")
        total.params += s.params
        total.bf16_bytes += s.bf16_bytes
        total.packed_bytes += s.packed_bytes
    rows.append(f"{'total':34s} {total.params:14,d} {_mb(total.bf16_bytes):>12s} {_mb(total.packed_bytes):>12s}")
    return "\n".join(rows)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
