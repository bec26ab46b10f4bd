"""The assembled BitVLA forward: token layout, zeroed action slots, shifted read-out,
bidirectional attention, batching, deploy mode."""

import pytest
import torch

import tiny
from bitvla_ros.kernels.constants import REAL_SHAPES
from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.config import bitvla_3b


def _batch(seed=0, cfg=None):
    cfg = cfg or tiny.config()
    images, instruction, proprio = tiny.observation(seed, cfg)
    return tiny.processor(cfg)(images, instruction, proprio[: cfg.proprio_dim])


def test_one_pass_gives_a_normalized_chunk():
    m = tiny.model()
    with torch.no_grad():
        out = m(**_batch())
    assert out.shape == (1, 8, 7) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_action_slot_ids_do_not_matter_because_slots_are_zeroed():
    m, b = tiny.model(), _batch()
    ids = b["input_ids"].clone()
    slots = ids > m.config.tokens.proprio
    ids[slots] = torch.randint(m.config.tokens.first_action, m.config.text.vocab_size, (int(slots.sum()),))
    embeds, mask = m.embed_inputs(ids, b["pixel_values"], b["proprio"])
    assert mask.sum() == 56 and embeds[mask].abs().max() == 0
    with torch.no_grad():
        assert torch.equal(m(**b), m(**{**b, "input_ids": ids}))


def test_read_out_uses_the_hidden_state_one_position_before_each_slot():
    m, b = tiny.model(), _batch()
    seen = {}
    m.action_head.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        m(**b)
        embeds, mask = m.embed_inputs(b["input_ids"], b["pixel_values"], b["proprio"])
        hidden = m.llm(embeds, b["attention_mask"])
    slots = mask[0].nonzero()[:, 0]
    assert slots[0] > 0 and torch.equal(slots, torch.arange(slots[0], slots[0] + 56))
    expected = hidden[0, slots - 1].reshape(8, 7 * hidden.shape[-1])  # timestep-major
    assert torch.equal(seen["x"][0], expected)


def test_attention_is_bidirectional_over_the_whole_sequence():
    # The stop token comes after every slot: under causal attention it could not change actions.
    m, b = tiny.model(), _batch()
    ids = b["input_ids"].clone()
    assert ids[0, -1] == m.config.tokens.stop
    ids[0, -1] = m.config.tokens.eot
    with torch.no_grad():
        assert not torch.allclose(m(**b), m(**{**b, "input_ids": ids}))


def test_images_and_proprio_reach_the_actions():
    m, b = tiny.model(), _batch()
    with torch.no_grad():
        base = m(**b)
        swapped = m(**{**b, "pixel_values": b["pixel_values"].flip(1)})
        moved = m(**{**b, "proprio": b["proprio"] + 0.5})
    assert not torch.allclose(base, swapped)
    assert not torch.allclose(base, moved)


def _padded_batch_and_singles(cfg):
    proc = tiny.processor(cfg)
    singles = [_batch(s, cfg) for s in (0, 2)]
    assert singles[0]["input_ids"].shape != singles[1]["input_ids"].shape
    ids, attn = proc.pad_batch([s["input_ids"][0] for s in singles])
    batch = {"input_ids": ids, "attention_mask": attn,
             "pixel_values": torch.cat([s["pixel_values"] for s in singles]),
             "proprio": torch.cat([s["proprio"] for s in singles])}
    return batch, singles


def _as(d, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in d.items()}


def test_right_padded_batch_equals_single_examples():
    # In fp64 the float noise between matmul shapes (a batch of 2 vs 1, another BLAS blocking,
    # another SDPA split) is ~1e-16 relative, so no int8 activation step can flip (the chance is
    # ~1e-9 over the tiny model's activations): batched and single runs must agree to fp64 rounding.
    # In fp32 that noise (~1e-7) flips a few rounding steps of the activation quantizer on some
    # CPUs, and each flip moves the chunk by ~1e-3 (see the fp32 test below).
    cfg = tiny.config()
    batch, singles = _padded_batch_and_singles(cfg)
    m = tiny.model().double()
    with torch.no_grad():
        together = m(**_as(batch, torch.float64))
        apart = torch.cat([m(**_as(s, torch.float64)) for s in singles])
    assert torch.allclose(together, apart, rtol=0, atol=1e-9)


def test_right_padded_batch_in_fp32_flips_only_a_few_activation_steps(report):
    """fp32: every quantized linear sees, on the real tokens, the same int8 codes batched as
    alone except for a bounded fraction of rounding flips."""
    from bitvla_ros.model.bitlinear import BitLinear
    from bitvla_ros.quant import quantize_activations_int8

    cfg = tiny.config()
    batch, singles = _padded_batch_and_singles(cfg)
    m = tiny.model()
    seen: dict[str, list[torch.Tensor]] = {}
    for name, mod in m.named_modules():
        if isinstance(mod, BitLinear) and mod.quantize:
            mod.register_forward_pre_hook(
                lambda mod, args, name=name: seen.setdefault(name, []).append(quantize_activations_int8(args[0])[0]))
    with torch.no_grad():
        together = m(**batch)
        apart = torch.cat([m(**s) for s in singles])
    flipped = total = 0
    for codes in seen.values():  # [batched, single 0, single 1]; vision layers see 2 images each
        for i, single in enumerate(codes[1:]):
            rows, n = single.shape[0], single.shape[-2]
            diff = codes[0][i * rows:(i + 1) * rows, :n] != single
            flipped, total = flipped + int(diff.sum()), total + diff.numel()
    err = (together - apart).abs().max().item()
    report(f"tiny model, right-padded batch vs single examples (fp32): {flipped}/{total} int8 activation "
           f"codes flipped, max |Δaction| {err:.1e}")
    # Measured on the tiny model: 0 flips on a 2-core EPYC; 0.2 % when every linear output is
    # perturbed by 1e-6 relative, ten times BLAS reordering noise. The chunk moves by 3.5e-3 at
    # 1e-7 relative noise and 1.8e-2 at 1e-5; a pad leaking into attention flips 30 % of the
    # codes and moves it by 0.5.
    assert flipped <= 0.01 * total
    assert err < 5e-2


def test_wrong_token_counts_are_clear_errors():
    m, b = tiny.model(), _batch()
    with pytest.raises(ValueError, match="image tokens"):
        m(**{**b, "pixel_values": b["pixel_values"][:, :1]})
    ids = b["input_ids"][:, :-5]  # cut action slots
    with pytest.raises(ValueError, match="56 action slots"):
        m(**{**b, "input_ids": ids, "attention_mask": torch.ones_like(ids)})


def test_deploy_mode_matches_train_mode(report):
    m, b = tiny.model(), _batch()
    with torch.no_grad():
        train = m(**b)
        m.to_deploy("reference", embedding="float")
        exact = m(**b)
        m.to_deploy("reference", embedding="int8", dtype=torch.bfloat16)
        packed_bf16 = m(**b)
    assert m.deployed and m.backend_name == "reference"
    err, err_bf16 = (train - exact).abs().max().item(), (train - packed_bf16).abs().max().item()
    report(f"tiny model, train vs deploy (fp32, float embedding): {err:.1e}; "
           f"vs deploy (bf16, int8 embedding): {err_bf16:.1e} normalized units")
    # Layer by layer the two modes agree to float rounding (test_bitlinear); through the model,
    # rounding-level differences flip a few int8 activation steps, which is the expected gap.
    assert err < 2e-2
    assert err_bf16 < 0.2


def test_vision_feature_layer_drops_unused_layers():
    cfg = tiny.config(vision_feature_layer=-2)
    assert len(BitVLA(cfg).vision.layers) == cfg.vision.num_hidden_layers - 1


def test_full_size_skeleton_has_the_published_shapes():
    m = BitVLA.deploy_skeleton(bitvla_3b())
    assert m.llm.embed_tokens.qweight.shape == (128264, 2560)
    assert m.llm.layers[29].mlp.down_proj.qweight.shape == (2560, 6912 // 4)
    assert m.llm.layers[0].self_attn.k_proj.qweight.shape == (640, 640)
    assert m.vision.layers[25].mlp.fc1.qweight.shape == (4304, 1152 // 4)
    assert m.action_head.fc1.weight.shape == (2560, 17920)
    assert len(m.ternary_layers()) == 30 * 7 + 26 * 6


def test_the_kernels_real_shapes_are_the_full_size_models():
    # kernels/ may not import model/, so the kernels' copy of the shapes is checked against the preset here
    shapes = {(layer.out_features, layer.in_features) for _, layer in BitVLA.deploy_skeleton(bitvla_3b()).ternary_layers()}
    assert shapes == set(REAL_SHAPES)
