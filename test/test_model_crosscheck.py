"""Our vision encoder and BitNet decoder against transformers' implementations.

Tiny random configs, the same weights in both (moved across through the published key map), with
quantization off and with identical fake-quant (transformers' online AutoBitLinear).
Fake-quant runs in float64: in fp32, ulp-level differences between two correct implementations
(SDPA vs eager attention) flip a few int8 rounding decisions, and one flip moves everything
downstream by a quantization step. Each test reports its max abs error.
"""

import pytest
import torch
from transformers import BitNetConfig, SiglipVisionConfig, SiglipVisionModel
from transformers import BitNetModel as HFBitNetModel
from transformers.integrations.bitnet import replace_with_bitnet_linear
from transformers.utils.quantization_config import BitNetQuantConfig

from bitvla_ros.model import keymap
from bitvla_ros.model.bitnet import BitNetModel
from bitvla_ros.model.config import TextConfig, VisionConfig
from bitvla_ros.model.vision import VisionEncoder

VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              patch_size=14, image_size=56, layer_norm_eps=1e-6)
TEXT = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=8,
            num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=256)


def _ours_from_hf(hf_state: dict, prefix: str) -> dict:
    out = {}
    for name, t in hf_state.items():
        ours = keymap.rename(keymap.normalize_prefix(prefix + name), keymap.WEIGHT_MAP)
        if ours is not None:
            out[ours.split(".", 1)[1]] = t  # drop "vision." / "llm."
    return out


def _fake_quant_hf(model, skip=()):
    """Swap every nn.Linear for transformers' online (QAT-style) ternary linear, same weights."""
    state = model.state_dict()
    cfg = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="online")
    replace_with_bitnet_linear(model, modules_to_not_convert=list(skip), quantization_config=cfg)
    model.load_state_dict(state, assign=True)
    return model


def _hf_siglip(seed=0):
    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(**VISION, hidden_act="gelu_pytorch_tanh", attn_implementation="eager")
    hf = SiglipVisionModel(cfg).eval()
    with torch.no_grad():  # random non-trivial norms and biases
        for name, p in hf.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf


def _ours_vision(hf, quantized: bool):
    ours = VisionEncoder(VisionConfig(**VISION, weight_bits=1 if quantized else 32, act_bits=8 if quantized else 32))
    ours.load_state_dict(_ours_from_hf(hf.state_dict(), "vision_tower.vision_model."))
    return ours.eval()


@pytest.mark.parametrize("quantized", [False, True], ids=["full-precision", "fake-quant"])
def test_vision_encoder_matches_transformers_siglip(quantized, record_property, report):
    hf = _hf_siglip()
    ours = _ours_vision(hf, quantized)
    pixels = torch.rand(2, 3, 56, 56) * 2 - 1
    if quantized:
        hf = _fake_quant_hf(hf, skip=["head"]).double()
        ours, pixels = ours.double(), pixels.double()
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True).hidden_states
        _, states = ours(pixels, output_hidden_states=True)
    assert len(states) == len(ref) == VISION["num_hidden_layers"] + 1
    err = max((a - b).abs().max().item() for a, b in zip(states, ref))
    record_property("max_abs_error", err)
    report(f"vision encoder vs SiglipVisionModel ({'fake-quant' if quantized else 'no quant'}): max abs error {err:.2e}")
    # Fake-quant rounds activations to int8 steps, so tiny float differences can flip a step.
    assert err < 1e-5


def _hf_bitnet(seed=0):
    torch.manual_seed(seed)
    cfg = BitNetConfig(**TEXT, hidden_act="relu2", bos_token_id=0, eos_token_id=1, pad_token_id=2,
                       attn_implementation="eager")
    hf = HFBitNetModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf


@pytest.mark.parametrize("quantized", [False, True], ids=["full-precision", "fake-quant"])
def test_bitnet_decoder_matches_transformers_bitnet(quantized, record_property, report):
    hf = _hf_bitnet()
    ours = BitNetModel(TextConfig(**TEXT))
    ours.load_state_dict(_ours_from_hf(hf.state_dict(), "language_model.model."))
    ours.eval()
    if not quantized:
        for m in ours.modules():
            if hasattr(m, "quantize"):
                m.quantize = False
    else:
        hf, ours = _fake_quant_hf(hf).double(), ours.double()
    ids = torch.randint(3, TEXT["vocab_size"], (2, 40))
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state  # transformers' BitNet is causal
        got = ours(ours.embed_tokens(ids), causal=True)
    err = (got - ref).abs().max().item()
    record_property("max_abs_error", err)
    report(f"BitNet decoder vs transformers BitNetModel ({'fake-quant' if quantized else 'no quant'}, causal): "
           f"max abs error {err:.2e}")
    assert err < 1e-5


def test_bidirectional_attention_matches_transformers_with_full_mask(report):
    """BitVLA attends over the whole sequence; transformers does the same given an all-visible
    4-D mask, which pins down our mask handling (and right padding) against a reference."""
    hf = _hf_bitnet(seed=1)
    ours = BitNetModel(TextConfig(**TEXT))
    ours.load_state_dict(_ours_from_hf(hf.state_dict(), "language_model.model."))
    ours.eval()
    for m in ours.modules():
        if hasattr(m, "quantize"):
            m.quantize = False
    ids = torch.randint(3, TEXT["vocab_size"], (2, 30))
    attn = torch.ones(2, 30, dtype=torch.long)
    attn[1, 24:] = 0  # right padding on the second row
    visible = attn.bool()[:, None, None, :].expand(2, 1, 30, 30)
    mask4d = torch.zeros(2, 1, 30, 30).masked_fill(~visible, torch.finfo(torch.float32).min)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask4d).last_hidden_state
        got = ours(ours.embed_tokens(ids), attention_mask=attn)
    real = attn.bool()
    err = (got - ref)[real].abs().max().item()
    report(f"BitNet decoder vs transformers with a bidirectional 4-D mask: max abs error {err:.2e}")
    assert err < 1e-5
    # and it really is bidirectional: changing the last real token changes the first position
    ids2 = ids.clone()
    ids2[0, 29] = (ids[0, 29] + 1 - 3) % (TEXT["vocab_size"] - 3) + 3
    with torch.no_grad():
        got2 = ours(ours.embed_tokens(ids2), attention_mask=attn)
    assert (got2[0, 0] - got[0, 0]).abs().max() > 1e-4
    # while padded keys are ignored: changing a pad token leaves the real positions untouched
    ids3 = ids.clone()
    ids3[1, 27] = (ids[1, 27] + 1 - 3) % (TEXT["vocab_size"] - 3) + 3
    with torch.no_grad():
        got3 = ours(ours.embed_tokens(ids3), attention_mask=attn)
    assert torch.equal(got3[1, :24], got[1, :24])
