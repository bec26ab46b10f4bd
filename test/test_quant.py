"""Ternary and int8 quantizers, straight-through gradients, and 2-bit packing."""

import pytest
import torch

from bitvla_ros.quant import (
    activation_fake_quant,
    pack_ternary,
    quantize_activations_int8,
    quantize_rows_int8,
    ternarize,
    unpack_ternary,
    weight_fake_quant,
)


def test_ternarize_hand_computed():
    w = torch.tensor([[0.5, -1.5, 0.1], [2.0, 0.0, -0.4]])
    codes, alpha = ternarize(w)
    assert alpha.item() == pytest.approx(4.5 / 6)  # mean |W|
    # W/α = [0.667, -2, 0.133], [2.667, 0, -0.533] → round, clamp to ±1
    assert codes.tolist() == [[1, -1, 0], [1, 0, -1]]
    assert codes.dtype == torch.int8


def test_ternarize_scale_floor_and_zero_matrix():
    codes, alpha = ternarize(torch.zeros(3, 4))
    assert alpha.item() == pytest.approx(1e-5)
    assert not codes.any()


def test_activation_quant_per_token_absmax():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [100.0, 1e-3, -3.0]])
    codes, scale = quantize_activations_int8(x)
    assert scale.shape == (3, 1)
    assert scale[0].item() == pytest.approx(127 / 2)
    assert codes[0].tolist() == [64, -127, 32]  # 63.5 rounds half-to-even to 64, 31.75 → 32
    assert codes[1].tolist() == [0, 0, 0]       # an all-zero row stays zero (scale floor 1e-5)
    assert codes[2].tolist() == [127, 0, -4]    # one huge value flattens the rest
    assert codes.abs().max() <= 127


def test_fake_quant_values_and_straight_through_gradients():
    torch.manual_seed(0)
    w = torch.randn(8, 16, requires_grad=True)
    x = torch.randn(4, 16, requires_grad=True)
    wq, xq = weight_fake_quant(w), activation_fake_quant(x)
    codes, alpha = ternarize(w)
    assert torch.allclose(wq, codes.float() * alpha)
    xc, xs = quantize_activations_int8(x)
    assert torch.allclose(xq, xc.float() / xs)
    g = torch.randn(4, 8)
    (xq @ wq.t()).backward(g)
    # STE: gradients are those of the plain matmul evaluated at the quantized values
    assert torch.allclose(w.grad, g.t() @ xq.detach())
    assert torch.allclose(x.grad, g @ wq.detach())


def test_fake_quant_keeps_dtype():
    w = torch.randn(4, 8, dtype=torch.bfloat16)
    assert weight_fake_quant(w).dtype == torch.bfloat16
    assert activation_fake_quant(w).dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 4), (2, 9), (5, 130), (64, 2561), (4, 0)])
def test_pack_unpack_round_trip_any_shape(shape):
    torch.manual_seed(shape[1])
    codes = torch.randint(-1, 2, shape, dtype=torch.int8)
    packed = pack_ternary(codes)
    assert packed.dtype == torch.uint8
    assert packed.shape == (shape[0], (shape[1] + 3) // 4)  # 4 codes a byte
    assert torch.equal(unpack_ternary(packed, shape[1]), codes)


def test_pack_layout_is_documented_bit_order():
    # codes c = w + 1; element j of each group of four in bits 2j..2j+1
    packed = pack_ternary(torch.tensor([[-1, 0, 1, 1, 0]]))
    assert packed.tolist() == [[0b10_10_01_00, 0b00_00_00_01]]


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="-1, 0, \\+1"):
        pack_ternary(torch.tensor([[2, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        pack_ternary(torch.zeros(4, dtype=torch.int8))
    with pytest.raises(ValueError, match="in_features"):
        unpack_ternary(torch.zeros(2, 3, dtype=torch.uint8), in_features=20)


def test_rows_int8_round_trip_error_bounded():
    torch.manual_seed(1)
    w = torch.randn(50, 33)
    q, s = quantize_rows_int8(w)
    assert q.dtype == torch.int8 and s.shape == (50,)
    err = (q.float() * s[:, None] - w).abs()
    assert (err <= s[:, None] / 2 + 1e-7).all()  # at most half a step per row
