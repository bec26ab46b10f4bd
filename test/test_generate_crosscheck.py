"""Our KV-cached greedy generation against transformers' LLaVA (SigLIP + BitNet) `generate`.

Tiny random configs with the same weights in both (moved across through the published key map),
an image prompt built as the chat format lays it out, with quantization off and with identical
fake-quant (transformers' online AutoBitLinear) in float64, where two correct implementations
agree to ulp level and argmax ties are not a concern. The tokens must match exactly.
"""

import pytest
import torch
from transformers import BitNetConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig
from transformers.integrations.bitnet import replace_with_bitnet_linear
from transformers.utils.quantization_config import BitNetQuantConfig

from bitvla_ros.model import keymap
from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.config import BitVLAConfig, TextConfig, TokenIds, VisionConfig
from bitvla_ros.model.generate import GenerationSettings, generate_ids
from bitvla_ros.model.lm_head import LanguageHead
from bitvla_ros.model.vqa import prompt_embeds

VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              patch_size=14, image_size=56, layer_norm_eps=1e-6)
TEXT = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=8,
            num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=256)
TOKENS = TokenIds.from_base(280)
NEW_TOKENS = 24


def _hf_llava(seed: int):
    torch.manual_seed(seed)
    vision = SiglipVisionConfig(**VISION, hidden_act="gelu_pytorch_tanh", vision_use_head=False)
    text = BitNetConfig(**TEXT, hidden_act="relu2", bos_token_id=TOKENS.bos, eos_token_id=TOKENS.stop,
                        pad_token_id=TOKENS.pad, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=TOKENS.image,
                      vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
                      image_seq_length=(56 // 14) ** 2, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    hf = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random non-trivial norms and biases, and a larger embedding spread
        for name, p in hf.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name == "lm_head.weight":  # untied and spread out: varied answers, not one repeated token
                p.normal_(0, 1.0)
    return hf


def _ours(hf, quantized: bool) -> BitVLA:
    vision = VisionConfig(**VISION, weight_bits=1 if quantized else 32, act_bits=8 if quantized else 32)
    cfg = BitVLAConfig(vision=vision, text=TextConfig(**TEXT), tokens=TOKENS, num_images=1).validate()
    ours = BitVLA(cfg)
    state = {}
    for name, t in hf.state_dict().items():
        # transformers 5 holds the SigLIP transformer itself as vision_tower (no vision_model level)
        name = name.replace("model.vision_tower.", "model.vision_tower.vision_model.", 1)
        mine = keymap.rename(keymap.normalize_prefix(name), keymap.WEIGHT_MAP)
        if mine is not None:
            state[mine] = t
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("action_head.", "proprio_projector.")) for k in missing), missing
    if not quantized:
        for m in ours.modules():
            if hasattr(m, "quantize"):
                m.quantize = False
    return ours.eval()


def _fake_quant(hf):
    state = hf.state_dict()
    cfg = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="online")
    replace_with_bitnet_linear(hf, modules_to_not_convert=["model.multi_modal_projector", "lm_head"],
                               quantization_config=cfg)
    hf.load_state_dict(state, assign=True)
    return hf


def _prompt(seed: int, num_images: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(0, TOKENS.bos, (n,), generator=g).tolist()  # noqa: E731
    image = [TOKENS.image] * (VISION["image_size"] // VISION["patch_size"]) ** 2
    ids = [TOKENS.bos, *text(5), TOKENS.eot, *text(2), *image * num_images, *text(7), TOKENS.eot, *text(3)]
    pixels = torch.rand(1, num_images, 3, 56, 56, generator=g) * 2 - 1
    return torch.tensor([ids]), pixels


def _hf_generate(hf, ids, pixels, stop):
    out = hf.generate(input_ids=ids, pixel_values=pixels.flatten(0, 1), attention_mask=torch.ones_like(ids),
                      max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=list(stop), pad_token_id=TOKENS.pad)
    return out[0, ids.shape[1]:].tolist()


def _our_generate(ours, head, ids, pixels, stop, dtype):
    with torch.no_grad():
        embeds = prompt_embeds(ours, ids, pixels.to(dtype))
    return list(generate_ids(ours.llm, head, embeds, GenerationSettings(max_new_tokens=NEW_TOKENS), stop))


@pytest.mark.parametrize("quantized", [False, True], ids=["full-precision", "fake-quant"])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_generation_matches_transformers_llava(quantized, seed, report):
    hf = _hf_llava(seed)
    ours = _ours(hf, quantized)
    if quantized:
        hf = _fake_quant(hf)
    hf, ours = hf.double(), ours.double()
    head = LanguageHead(hf.lm_head.weight.detach())
    ids, pixels = _prompt(seed)
    pixels = pixels.double()
    stop = (TOKENS.eot, TOKENS.stop)
    with torch.no_grad():
        ref = _hf_generate(hf, ids, pixels, stop)
    got = _our_generate(ours, head, ids, pixels, stop, torch.float64)
    report(f"greedy generation vs LlavaForConditionalGeneration.generate ({'fake-quant' if quantized else 'no quant'}"
           f", seed {seed}): {len(got)} tokens, {'identical' if got == ref else 'DIFFERENT'}")
    assert got == ref
    assert len(set(got)) > 2  # not a degenerate repeat that any bug would also produce

    # A stop id ends both at the same place, and is itself the last token.
    stop_at = (got[5],)
    with torch.no_grad():
        ref_stop = _hf_generate(hf, ids, pixels, stop_at)
    got_stop = _our_generate(ours, head, ids, pixels, stop_at, torch.float64)
    assert got_stop == ref_stop == got[: got.index(got[5]) + 1]


def test_cached_decode_equals_full_causal_recompute():
    """Each KV-cached step gives the hidden state a full causal pass over the sequence gives."""
    hf = _hf_llava(2)
    ours = _ours(hf, quantized=True).double()
    head = LanguageHead(hf.lm_head.weight.detach().double())
    ids, pixels = _prompt(2)
    with torch.no_grad():
        embeds = prompt_embeds(ours, ids, pixels.double())
        tokens = _our_generate(ours, head, ids, pixels, (), torch.float64)[:8]
        seq = torch.cat([embeds, ours.llm.embed_tokens(torch.tensor([tokens[:-1]])).double()], dim=1)
        full = ours.llm(seq, causal=True)
        recomputed = head(full[0, ids.shape[1] - 1:]).argmax(-1).tolist()
    assert recomputed == tokens
