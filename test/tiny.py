"""Tiny models, tokenizers, observations and checkpoints for tests; nothing is downloaded.

`write_published_checkpoint` writes the published BitVLA master-weight layout
(docs/checkpoints.md) with every key spelled out here, independently of the package's own key
map, so that the loader is tested against the layout and not against itself.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.config import BitVLAConfig, tiny, with_vocab
from bitvla_ros.model.processor import BitVLAProcessor
from bitvla_ros.model.tokenizer import build_tokenizer, save_tokenizer, token_ids, vocab_size

CORPUS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "put the bowl on the stove",
    "open the top drawer of the cabinet",
    "put the cream cheese in the bowl",
    "turn on the stove",
    "push the plate to the front of the stove",
]

STATS_KEY = "libero_spatial_no_noops"


@lru_cache(maxsize=1)
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=300, n_action_bins=4)


def config(**overrides) -> BitVLAConfig:
    tok = tokenizer()
    cfg = with_vocab(tiny(), vocab_size(tok), token_ids(tok))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg.validate()


def model(seed: int = 0, cfg: BitVLAConfig | None = None) -> BitVLA:
    torch.manual_seed(seed)
    m = BitVLA(cfg or config())
    with torch.no_grad():  # non-trivial norms and biases, so a wrong key mapping shows
        for name, p in m.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def processor(cfg: BitVLAConfig | None = None) -> BitVLAProcessor:
    return BitVLAProcessor(cfg or config(), tokenizer())


def observation(seed: int = 0, cfg: BitVLAConfig | None = None):
    """(images, instruction, raw proprio) for one step."""
    cfg = cfg or config()
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(cfg.num_images)]
    return images, CORPUS[seed % len(CORPUS)], rng.uniform(-0.5, 0.5, cfg.proprio_dim)


def actions_per_setting(model: BitVLA, settings: dict, seed: int = 0) -> dict:
    """The chunk (fp32) the model gives one observation after each ``settings[name](model)`` call."""
    images, instruction, proprio = observation(seed, model.config)
    batch = processor(model.config)(images, instruction, proprio)
    out = {}
    with torch.no_grad():
        for name, apply in settings.items():
            apply(model)
            out[name] = model(**batch).float()
    return out


def statistics(action_dim: int = 7, proprio_dim: int = 8) -> dict:
    """A dataset_statistics.json table in the published layout."""
    a_lo, a_hi = -np.linspace(0.5, 1.0, action_dim), np.linspace(0.3, 0.9, action_dim)
    p_lo, p_hi = -np.ones(proprio_dim), np.ones(proprio_dim) * 0.5
    stat = lambda lo, hi: {"mean": ((lo + hi) / 2).tolist(), "std": ((hi - lo) / 4).tolist(),  # noqa: E731
                           "max": (hi * 1.1).tolist(), "min": (lo * 1.1).tolist(),
                           "q01": lo.tolist(), "q99": hi.tolist()}
    action = stat(a_lo, a_hi) | {"mask": [True] * (action_dim - 1) + [False]}
    return {STATS_KEY: {"action": action, "proprio": stat(p_lo, p_hi),
                        "num_transitions": 1000, "num_trajectories": 10}}


def published_state(m: BitVLA) -> tuple[dict, dict, dict]:
    """(main safetensors, action-head .pt, proprio .pt) dicts under the published key names."""
    cfg = m.config
    vit, llm = "vision_tower.vision_model.", "language_model.model."
    main = {
        vit + "embeddings.patch_embedding.weight": m.vision.embeddings.patch_embedding.weight,
        vit + "embeddings.patch_embedding.bias": m.vision.embeddings.patch_embedding.bias,
        vit + "embeddings.position_embedding.weight": m.vision.embeddings.position_embedding.weight,
        "multi_modal_projector.linear_1.weight": m.projector.linear_1.weight,
        "multi_modal_projector.linear_1.bias": m.projector.linear_1.bias,
        "multi_modal_projector.linear_2.weight": m.projector.linear_2.weight,
        "multi_modal_projector.linear_2.bias": m.projector.linear_2.bias,
        llm + "embed_tokens.weight": m.llm.embed_tokens.weight,
        llm + "norm.weight": m.llm.norm.weight,
    }
    for i, layer in enumerate(m.vision.layers):
        p = f"{vit}encoder.layers.{i}."
        for norm in ("layer_norm1", "layer_norm2"):
            main[p + norm + ".weight"] = getattr(layer, norm).weight
            main[p + norm + ".bias"] = getattr(layer, norm).bias
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            main[p + f"self_attn.{proj}.weight"] = getattr(layer.self_attn, proj).weight
            main[p + f"self_attn.{proj}.bias"] = getattr(layer.self_attn, proj).bias
        for fc in ("fc1", "fc2"):
            main[p + f"mlp.{fc}.weight"] = getattr(layer.mlp, fc).weight
            main[p + f"mlp.{fc}.bias"] = getattr(layer.mlp, fc).bias
    for i, layer in enumerate(m.llm.layers):
        p = f"{llm}layers.{i}."
        main[p + "input_layernorm.weight"] = layer.input_layernorm.weight
        main[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
        main[p + "self_attn.attn_sub_norm.weight"] = layer.self_attn.attn_sub_norm.weight
        main[p + "mlp.ffn_sub_norm.weight"] = layer.mlp.ffn_sub_norm.weight
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            main[p + f"self_attn.{proj}.weight"] = getattr(layer.self_attn, proj).weight
        for proj in ("gate_proj", "up_proj", "down_proj"):
            main[p + f"mlp.{proj}.weight"] = getattr(layer.mlp, proj).weight
    h = m.action_head
    head = {"module.model.layer_norm1.weight": h.layer_norm1.weight, "module.model.layer_norm1.bias": h.layer_norm1.bias,
            "module.model.fc1.weight": h.fc1.weight, "module.model.fc1.bias": h.fc1.bias,
            "module.model.layer_norm2.weight": h.layer_norm2.weight, "module.model.layer_norm2.bias": h.layer_norm2.bias,
            "module.model.fc2.weight": h.fc2.weight, "module.model.fc2.bias": h.fc2.bias}
    for i, block in enumerate(h.blocks):
        head[f"module.model.mlp_resnet_blocks.{i}.ffn.0.weight"] = block.norm.weight
        head[f"module.model.mlp_resnet_blocks.{i}.ffn.0.bias"] = block.norm.bias
        head[f"module.model.mlp_resnet_blocks.{i}.ffn.1.weight"] = block.fc.weight
        head[f"module.model.mlp_resnet_blocks.{i}.ffn.1.bias"] = block.fc.bias
    pp = m.proprio_projector
    proprio = {"module.fc1.weight": pp.fc1.weight, "module.fc1.bias": pp.fc1.bias,
               "module.fc2.weight": pp.fc2.weight, "module.fc2.bias": pp.fc2.bias}
    clean = lambda d: {k: v.detach().clone().contiguous() for k, v in d.items()}  # noqa: E731
    return clean(main), clean(head), clean(proprio)


def published_config(cfg: BitVLAConfig) -> dict:
    """config.json as the published checkpoints write it: LLaVA-style, no bitvla_ros section."""
    v, t = cfg.vision, cfg.text
    return {
        "model_type": "bitvla", "architectures": ["BitVLAForActionPrediction"], "vocab_size": t.vocab_size,
        "vision_feature_layer": -1, "vision_feature_select_strategy": "full", "projector_hidden_act": "gelu",
        "multimodal_projector_bias": True, "image_token_index": 128010, "image_seq_length": v.num_patches,
        "n_action_bins": 256, "norm_stats": None,
        "text_config": {"model_type": "BitNet", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                        "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                        "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
                        "rope_theta": t.rope_theta, "rms_norm_eps": t.rms_norm_eps,
                        "max_position_embeddings": t.max_position_embeddings, "tie_word_embeddings": True,
                        "bos_token_id": cfg.tokens.bos, "eos_token_id": cfg.tokens.stop, "attention_bias": False},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": v.hidden_size,
                          "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_hidden_layers,
                          "num_attention_heads": v.num_attention_heads, "patch_size": v.patch_size,
                          "image_size": v.image_size, "layer_norm_eps": v.layer_norm_eps,
                          "hidden_act": "gelu_pytorch_tanh", "vit_weight_bits": 1, "vit_act_bits": 8},
    }


def write_published_checkpoint(directory: Path, m: BitVLA | None = None, step: int = 10000) -> Path:
    """A folder in the published layout. The tiny vocabulary puts the special tokens at other ids
    than 128000+; as in a fine-tuned repo, the tokenizer.json saved beside the weights carries them."""
    m = m or model()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    main, head, proprio = published_state(m)
    (directory / "config.json").write_text(json.dumps(published_config(m.config), indent=2))
    save_file(main, str(directory / "model.safetensors"))
    torch.save(head, directory / f"action_head--{step}_checkpoint.pt")
    torch.save(proprio, directory / f"proprio_projector--{step}_checkpoint.pt")
    (directory / "dataset_statistics.json").write_text(json.dumps(statistics(), indent=2))
    save_tokenizer(tokenizer(), directory)
    return directory
