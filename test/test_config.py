"""BitVLAConfig <-> config.json: every field is written and read back, under the published names."""

import json
from dataclasses import fields, replace

from bitvla_ros.model.config import BitVLAConfig, TextConfig, bitvla_3b


def test_every_field_survives_a_round_trip_through_config_json():
    base = bitvla_3b()
    vision = replace(base.vision, hidden_size=2304, intermediate_size=8608, num_hidden_layers=12,
                     num_attention_heads=32, patch_size=16, image_size=256, num_channels=1, layer_norm_eps=1e-5,
                     weight_bits=32, act_bits=32)
    text = replace(base.text, vocab_size=130000, hidden_size=1024, intermediate_size=2048, num_hidden_layers=3,
                   num_attention_heads=16, num_key_value_heads=4, rope_theta=1e4, rms_norm_eps=1e-6,
                   max_position_embeddings=1024)
    cfg = replace(base, vision=vision, text=text, tokens=replace(base.tokens, pad=base.tokens.pad + 100),
                  num_images=3, action_chunk=4, action_dim=6, proprio_dim=9, use_proprio=False,
                  action_head_blocks=3, center_crop=True, image_pipeline="libero", vision_feature_layer=-2)
    for new, old in ((cfg.vision, base.vision), (cfg.text, base.text), (cfg, base)):  # a new field must be added above
        unchanged = [f.name for f in fields(new) if getattr(new, f.name) == getattr(old, f.name)]
        assert unchanged == [], f"give these fields a non-default value in this test: {unchanged}"
    back = BitVLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


def test_published_names_and_defaults_of_absent_keys():
    d = bitvla_3b().to_dict()
    assert d["vision_config"]["vit_weight_bits"] == 1 and d["vision_config"]["vit_act_bits"] == 8
    assert "weight_bits" not in d["vision_config"]
    assert set(d["text_config"]) >= {f.name for f in fields(TextConfig)}
    assert "vision_feature_layer" not in d["bitvla_ros"]
    # A published config without the bitsiglip keys describes the full-precision SigLIP variant.
    del d["vision_config"]["vit_weight_bits"], d["vision_config"]["vit_act_bits"]
    del d["bitvla_ros"]
    cfg = BitVLAConfig.from_dict(d)
    assert (cfg.vision.weight_bits, cfg.vision.act_bits) == (32, 32)
    assert cfg.action_chunk == 8 and cfg.tokens == bitvla_3b().tokens
