"""BitLinear: train mode (fake-quant, gradients) and deploy mode (packed codes only) agree."""

import pytest
import torch

from bitvla_ros.model.bitlinear import BitLinear


@pytest.mark.parametrize("k", [16, 37])
def test_deploy_matches_train_within_int8_rounding(k):
    torch.manual_seed(k)
    layer = BitLinear(k, 12)
    x = torch.randn(2, 5, k)
    with torch.no_grad():
        y_train = layer(x)
        layer.to_deploy("reference")
        y_deploy = layer(x)
    assert y_deploy.shape == (2, 5, 12)
    # Same integer math; only the order of float rounding differs.
    assert torch.allclose(y_train, y_deploy, atol=1e-5, rtol=1e-5)


def test_deploy_mode_holds_only_packed_codes_and_scale():
    layer = BitLinear(10, 6).to_deploy("reference")
    assert not hasattr(layer, "weight")
    assert set(dict(layer.named_buffers())) == {"qweight", "weight_scale"}
    assert layer.qweight.dtype == torch.uint8 and layer.qweight.shape == (6, 3)
    assert layer.weight_scale.dtype == torch.float32
    assert [n for n, _ in layer.named_parameters()] == ["bias"]


def test_train_mode_gradients_flow_to_master_weight():
    torch.manual_seed(0)
    layer = BitLinear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_packed_skeleton_loads_a_deployed_state_dict():
    torch.manual_seed(0)
    src = BitLinear(9, 5).to_deploy("reference")
    dst = BitLinear.packed(9, 5)
    dst.load_state_dict(src.state_dict())
    dst.set_backend("reference")
    x = torch.randn(4, 9)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_full_precision_layer_is_plain_linear_and_has_no_deploy_mode():
    torch.manual_seed(0)
    layer = BitLinear(6, 3, quantize=False)
    x = torch.randn(2, 6)
    assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    with pytest.raises(ValueError, match="full-precision"):
        layer.to_deploy()


def test_unknown_backend_is_a_clear_error():
    layer = BitLinear(4, 4).to_deploy("reference")
    with pytest.raises(ValueError, match="unknown kernel backend 'nope'.*reference"):
        layer.set_backend("nope")
