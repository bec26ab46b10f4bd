"""BitVLA configuration: one dataclass tree, presets, and config.json in the published layout.

The same code builds any size from a config: the published `bitvla-3b` (docs/model.md),
a `tiny` preset for tests, and whatever a config.json says. config.json is written in the
published LLaVA-style layout (`text_config`, `vision_config`, ...) plus one `bitvla_ros` section
for what the published file leaves implicit (chunk size, action and proprio dims, token ids).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

# Published top-level model types we accept. "openvla" is what a third-party converter expects in
# the fine-tuned repos; "bitvla" is what the reference code writes.
PUBLISHED_MODEL_TYPES = ("bitvla", "openvla", "llava")
TEXT_MODEL_TYPES = ("BitNet", "bitnet")
VISION_MODEL_TYPES = ("siglip_vision_model",)


class ConfigError(ValueError):
    """A config.json that cannot describe a BitVLA model."""


@dataclass
class VisionConfig:
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 26
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    # W1.58-A8 ("bitsiglip") when 1 and 8; 32/32 is the full-precision SigLIP variant, which is
    # also what a published config.json without these keys means.
    weight_bits: int = field(default=1, metadata={"key": "vit_weight_bits", "absent": 32})
    act_bits: int = field(default=8, metadata={"key": "vit_act_bits", "absent": 32})

    @property
    def quantized(self) -> bool:
        return self.weight_bits == 1 and self.act_bits == 8

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class TextConfig:
    vocab_size: int = 128264
    hidden_size: int = 2560
    intermediate_size: int = 6912
    num_hidden_layers: int = 30
    num_attention_heads: int = 20
    num_key_value_heads: int = 5
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class TokenIds:
    """Ids of the special tokens (docs/model.md). Action slots are ids > proprio."""

    bos: int = 128000
    stop: int = 128001  # <|end_of_text|>, appended after the action slots
    pad: int = 128002
    eot: int = 128009
    image: int = 128010
    proprio: int = 128011

    @property
    def first_action(self) -> int:
        return self.proprio + 1

    @classmethod
    def from_base(cls, base: int) -> "TokenIds":
        """The published offsets above a base vocabulary of ``base`` ordinary tokens."""
        return cls(bos=base, stop=base + 1, pad=base + 2, eot=base + 9, image=base + 10, proprio=base + 11)


@dataclass
class BitVLAConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    tokens: TokenIds = field(default_factory=TokenIds)
    num_images: int = 2  # agentview first, then wrist
    action_chunk: int = 8
    action_dim: int = 7
    proprio_dim: int = 8
    use_proprio: bool = True
    action_head_blocks: int = 2
    # Trained with random crops: deploy with the central 90%-area crop (docs/model.md).
    center_crop: bool = False
    # Camera image preprocessing: "siglip" (resize + normalize, as SigLIP's processor) or "libero"
    # (the published LIBERO eval's JPEG round trip, Lanczos resize and TF center crop first).
    image_pipeline: str = "siglip"
    # How many vision layers feed the projector, as the published `vision_feature_layer` (a
    # top-level key of config.json; the other scalar fields above go in its `bitvla_ros` section).
    vision_feature_layer: int = field(default=-1, metadata={"published": True})

    @property
    def num_action_slots(self) -> int:
        return self.action_chunk * self.action_dim

    @property
    def vision_layers_used(self) -> int:
        n = self.vision.num_hidden_layers
        used = n + 1 + self.vision_feature_layer if self.vision_feature_layer < 0 else self.vision_feature_layer
        if not 1 <= used <= n:
            raise ConfigError(
                f"vision_feature_layer={self.vision_feature_layer} selects no encoder layer of {n}; "
                "use -1 for the last layer"
            )
        return used

    def validate(self) -> "BitVLAConfig":
        v, t = self.vision, self.text
        if v.hidden_size % v.num_attention_heads:
            raise ConfigError(f"vision hidden_size {v.hidden_size} is not divisible by {v.num_attention_heads} heads")
        if t.hidden_size % t.num_attention_heads or t.num_attention_heads % t.num_key_value_heads:
            raise ConfigError(
                f"text hidden_size {t.hidden_size}, {t.num_attention_heads} heads and {t.num_key_value_heads} "
                "KV heads do not divide evenly"
            )
        if (v.weight_bits, v.act_bits) not in ((1, 8), (32, 32), (16, 16)):
            raise ConfigError(
                f"vision quantization W{v.weight_bits}-A{v.act_bits} is not implemented; "
                "use vit_weight_bits 1 / vit_act_bits 8 (bitsiglip) or 32 / 32 (full precision)"
            )
        if self.tokens.proprio >= t.vocab_size:
            raise ConfigError(
                f"special token ids reach {self.tokens.proprio} but the vocabulary has {t.vocab_size} rows"
            )
        if self.image_pipeline not in ("siglip", "libero"):
            raise ConfigError(f"image_pipeline {self.image_pipeline!r} is unknown; use 'siglip' or 'libero'")
        self.vision_layers_used  # raises on a bad feature layer
        return self

    # --- config.json -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The published LLaVA-style layout plus our `bitvla_ros` section. Each field is written
        under its own name (or its ``key`` metadata); the constants around them are what the
        published files say of every BitVLA."""
        v, t, tok = self.vision, self.text, self.tokens
        return {
            "model_type": "bitvla",
            "architectures": ["BitVLAForActionPrediction"],
            "vocab_size": t.vocab_size,
            "vision_feature_layer": self.vision_feature_layer,
            "vision_feature_select_strategy": "full",
            "projector_hidden_act": "gelu",
            "multimodal_projector_bias": True,
            "image_token_index": tok.image,
            "image_seq_length": v.num_patches,
            "n_action_bins": 256,
            "text_config": {
                "model_type": "BitNet",
                **_fields_to_json(t),
                "tie_word_embeddings": True,
                "attention_bias": False,
                "bos_token_id": tok.bos,
                "eos_token_id": tok.stop,
                "pad_token_id": tok.pad,
            },
            "vision_config": {
                "model_type": "siglip_vision_model",
                **_fields_to_json(v),
                "hidden_act": "gelu_pytorch_tanh",
            },
            "bitvla_ros": {
                **{f.name: getattr(self, f.name) for f in _section_fields()},
                "token_ids": asdict(tok),
            },
        }

    @classmethod
    def from_dict(cls, d: dict, tokens: TokenIds | None = None) -> "BitVLAConfig":
        """Parse a config.json dict. Special ids: ``tokens`` if given, else the `bitvla_ros`
        section's, else the published ones."""
        model_type = d.get("model_type")
        ours = d.get("bitvla_ros", {})
        if model_type not in PUBLISHED_MODEL_TYPES:
            raise ConfigError(
                f"unknown model_type {model_type!r}; a BitVLA config.json has model_type one of "
                f"{list(PUBLISHED_MODEL_TYPES)} with a BitNet text_config and a SigLIP vision_config"
            )
        tc, vc = d.get("text_config"), d.get("vision_config")
        if not isinstance(tc, dict) or not isinstance(vc, dict):
            raise ConfigError("config.json lacks `text_config` or `vision_config`; it is not a BitVLA (LLaVA-style) config")
        if tc.get("model_type") not in TEXT_MODEL_TYPES:
            raise ConfigError(
                f"text_config.model_type is {tc.get('model_type')!r}; BitVLA needs a BitNet language model "
                f"({TEXT_MODEL_TYPES[0]!r})"
            )
        if vc.get("model_type", VISION_MODEL_TYPES[0]) not in VISION_MODEL_TYPES:
            raise ConfigError(f"vision_config.model_type is {vc.get('model_type')!r}; expected 'siglip_vision_model'")
        strategy = d.get("vision_feature_select_strategy", "full")
        if strategy != "full":
            raise ConfigError(
                f"vision_feature_select_strategy {strategy!r} is not supported; BitVLA keeps all patches ('full')"
            )
        vision = _fields_from_json(VisionConfig, vc)
        text = _fields_from_json(TextConfig, tc)
        if "vocab_size" in d and "vocab_size" not in tc:
            text.vocab_size = d["vocab_size"]
        if tokens is None:
            tokens = TokenIds(**ours["token_ids"]) if "token_ids" in ours else TokenIds()
        extras = {f.name: ours[f.name] for f in _section_fields() if f.name in ours}
        vfl = d.get("vision_feature_layer", -1)
        if isinstance(vfl, list):
            raise ConfigError(f"vision_feature_layer {vfl} (several layers) is not supported; BitVLA uses one layer")
        return cls(vision=vision, text=text, tokens=tokens, vision_feature_layer=vfl, **extras).validate()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BitVLAConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json at {path}; a BitVLA model folder needs one")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)


def _fields_to_json(config) -> dict:
    """A flat config dataclass as config.json keys: a field's ``key`` metadata, else its name."""
    return {f.metadata.get("key", f.name): getattr(config, f.name) for f in fields(config)}


def _fields_from_json(kind, d: dict):
    """Build flat dataclass ``kind`` from the keys of ``d`` it knows, ignoring the rest; a missing
    key takes the field's ``absent`` metadata if it has one, else the field's default."""
    values = {}
    for f in fields(kind):
        key = f.metadata.get("key", f.name)
        if key in d:
            values[f.name] = d[key]
        elif "absent" in f.metadata:
            values[f.name] = f.metadata["absent"]
    return kind(**values)


def _section_fields():
    """The fields of BitVLAConfig that config.json keeps in its `bitvla_ros` section: the scalars
    the published file leaves implicit (not the nested configs, not the published keys)."""
    return [f for f in fields(BitVLAConfig) if f.name not in ("vision", "text", "tokens") and not f.metadata.get("published")]


# --- presets ---------------------------------------------------------------------------------

def bitvla_3b() -> BitVLAConfig:
    """The published BitVLA: bitsiglip (26 × 1152) + BitNet b1.58 2B4T, LIBERO chunk 8 × 7."""
    return BitVLAConfig().validate()


def tiny(vocab_base: int = 256) -> BitVLAConfig:
    """A few-thousand-parameter model for tests: 56 px images (16 patches), 2 + 2 layers."""
    return BitVLAConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            patch_size=14, image_size=56),
        text=TextConfig(vocab_size=vocab_base + 16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=512),
        tokens=TokenIds.from_base(vocab_base),
    ).validate()


def demo(vocab_base: int = 400) -> BitVLAConfig:
    """The small default model this project trains on a CPU: 96 px images (patch 16, 36 tokens
    each), a 4-layer ternary ViT (128 wide) and a 4-layer ternary BitNet (192 wide), ~3 M params."""
    return BitVLAConfig(
        vision=VisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                            patch_size=16, image_size=96),
        text=TextConfig(vocab_size=vocab_base + 16, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                        num_attention_heads=6, num_key_value_heads=2, rope_theta=10000.0,
                        max_position_embeddings=512),
        tokens=TokenIds.from_base(vocab_base),
    ).validate()


PRESETS = {"bitvla-3b": bitvla_3b, "demo": demo, "tiny": tiny}


def preset(name: str) -> BitVLAConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or pass a config.json")
    return PRESETS[name]()


def with_vocab(config: BitVLAConfig, vocab_size: int, tokens: TokenIds) -> BitVLAConfig:
    """The same config resized to a tokenizer's vocabulary and special ids."""
    return replace(config, text=replace(config.text, vocab_size=vocab_size), tokens=tokens).validate()
