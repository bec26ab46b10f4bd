"""Published BitVLA key names → ours, in one table (docs/checkpoints.md).

Every weight of the published master-weight checkpoint is listed once, with `{}` standing for a
layer or block index. The two `.pt` sidecars have tables of their own (after their DDP `module.`
prefix is stripped). Nothing else in the code spells a published name.
"""

from __future__ import annotations

import functools
import re

_VIT = "vision_tower.vision_model."
_LLM = "language_model.model."

WEIGHT_MAP = {
    # vision tower (SigLIP, no CLS, no post-LN used)
    _VIT + "embeddings.patch_embedding.weight": "vision.embeddings.patch_embedding.weight",
    _VIT + "embeddings.patch_embedding.bias": "vision.embeddings.patch_embedding.bias",
    _VIT + "embeddings.position_embedding.weight": "vision.embeddings.position_embedding.weight",
    **{_VIT + f"encoder.layers.{{}}.{name}": f"vision.layers.{{}}.{name}" for name in (
        "layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
        "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
        "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")},
    # connector
    "multi_modal_projector.linear_1.weight": "projector.linear_1.weight",
    "multi_modal_projector.linear_1.bias": "projector.linear_1.bias",
    "multi_modal_projector.linear_2.weight": "projector.linear_2.weight",
    "multi_modal_projector.linear_2.bias": "projector.linear_2.bias",
    # BitNet LLM
    _LLM + "embed_tokens.weight": "llm.embed_tokens.weight",
    _LLM + "norm.weight": "llm.norm.weight",
    **{_LLM + f"layers.{{}}.{name}": f"llm.layers.{{}}.{name}" for name in (
        "input_layernorm.weight", "post_attention_layernorm.weight",
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "self_attn.attn_sub_norm.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "mlp.ffn_sub_norm.weight")},
}

# action_head--<step>_checkpoint.pt (an L1RegressionActionHead wrapping an MLPResNet as `model`)
ACTION_HEAD_MAP = {
    "model.layer_norm1.weight": "action_head.layer_norm1.weight",
    "model.layer_norm1.bias": "action_head.layer_norm1.bias",
    "model.fc1.weight": "action_head.fc1.weight",
    "model.fc1.bias": "action_head.fc1.bias",
    "model.mlp_resnet_blocks.{}.ffn.0.weight": "action_head.blocks.{}.norm.weight",
    "model.mlp_resnet_blocks.{}.ffn.0.bias": "action_head.blocks.{}.norm.bias",
    "model.mlp_resnet_blocks.{}.ffn.1.weight": "action_head.blocks.{}.fc.weight",
    "model.mlp_resnet_blocks.{}.ffn.1.bias": "action_head.blocks.{}.fc.bias",
    "model.layer_norm2.weight": "action_head.layer_norm2.weight",
    "model.layer_norm2.bias": "action_head.layer_norm2.bias",
    "model.fc2.weight": "action_head.fc2.weight",
    "model.fc2.bias": "action_head.fc2.bias",
}

# proprio_projector--<step>_checkpoint.pt
PROPRIO_MAP = {
    "fc1.weight": "proprio_projector.fc1.weight",
    "fc1.bias": "proprio_projector.fc1.bias",
    "fc2.weight": "proprio_projector.fc2.weight",
    "fc2.bias": "proprio_projector.fc2.bias",
}

# Present in some checkpoints, never used for actions.
IGNORED_PREFIXES = (_VIT + "post_layernorm.", _VIT + "head.", "language_model.lm_head.", "lm_head.")

# transformers >= 4.52 renamed the LLaVA prefixes; map them back before the table applies.
NEWER_PREFIXES = {
    "model.vision_tower.": "vision_tower.",
    "model.multi_modal_projector.": "multi_modal_projector.",
    "model.language_model.": _LLM,
}

def _compile(table: dict[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(re.escape(src).replace(r"\{\}", r"(\d+)") + "$"), dst) for src, dst in table.items()]


@functools.lru_cache(maxsize=16)
def _compiled(items: tuple) -> list[tuple[re.Pattern, str]]:
    return _compile(dict(items))


def rename(name: str, table: dict[str, str]) -> str | None:
    """Our name for a published ``name`` under ``table`` (``{}`` matches an index), or None."""
    patterns = _compiled(tuple(table.items()))
    for pattern, dst in patterns:
        m = pattern.match(name)
        if m:
            return dst.format(*m.groups())
    return None


def reverse(table: dict[str, str]) -> dict[str, str]:
    return {ours: theirs for theirs, ours in table.items()}


def normalize_prefix(name: str) -> str:
    for new, old in NEWER_PREFIXES.items():
        if name.startswith(new):
            return old + name[len(new):]
    return name
