"""Fused RMSNorm / squared-ReLU GLU (csrc/norm_cpu.cpp) against the torch reference beside them."""

import pytest
import torch

import tiny
from bitvla_ros.kernels import autotune, elementwise

pytestmark = pytest.mark.skipif(not elementwise.fused_available(), reason="the cpu kernel extension is not built here")


@pytest.mark.parametrize("width", [16, 2560, 2561, 37])
def test_rms_norm_bf16_lands_on_the_reference_or_one_step_beside_it(width):
    g = torch.Generator().manual_seed(width)
    x = (torch.randn(64, width, generator=g) * 3).bfloat16()
    w = (torch.randn(width, generator=g) * 0.5 + 1).bfloat16()
    got, ref = elementwise.rms_norm(x, w, 1e-5, "fused"), elementwise.rms_norm_reference(x, w, 1e-5)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape
    differ = got != ref
    # The sum of squares is added in another order than torch's: a value on a rounding boundary
    # may round the other way, by one bf16 step (2^-7 relative), and rarely.
    assert differ.float().mean() < 1e-3
    step = ref.float().abs() * 2 ** -7 * 1.01
    assert ((got.float() - ref.float()).abs() <= step * 2 + 1e-30).all()


def test_rms_norm_fp32_agrees_to_fp32_rounding_and_keeps_nan_rows():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 100, generator=g), torch.randn(100, generator=g)
    x[3, 7] = float("nan")
    got, ref = elementwise.rms_norm(x, w, 1e-6, "fused"), elementwise.rms_norm_reference(x, w, 1e-6)
    assert torch.isnan(got[3]).all() and torch.isnan(ref[3]).all()
    keep = torch.arange(8) != 3
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_glu_is_exactly_the_reference(dtype):
    g = torch.Generator().manual_seed(1)
    gate, up = (torch.randn(5, 6913, generator=g).to(dtype) for _ in range(2))
    gate[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")]).to(dtype)
    got, ref = elementwise.relu2_glu(gate, up, "fused"), elementwise.relu2_glu_reference(gate, up)
    torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)


def test_training_keeps_the_differentiable_reference():
    x = torch.randn(4, 32, requires_grad=True)
    w = torch.ones(32, requires_grad=True)
    y = elementwise.rms_norm(x, w, 1e-5, "fused")
    y.sum().backward()  # the fused op has no backward: grad mode must route to torch
    assert x.grad is not None


def test_a_cpu_deployment_takes_the_measured_elementwise_and_keeps_its_actions(tmp_path, monkeypatch):
    monkeypatch.setenv("BITVLA_CACHE_DIR", str(tmp_path))
    model = tiny.model(seed=2).to_deploy("reference", dtype=torch.bfloat16)
    tuning = model.elementwise_tuning
    assert tuning is not None and set(tuning.seconds) == set(elementwise.IMPLS)
    impls = {m.elementwise_impl for m in model.modules() if hasattr(m, "elementwise_impl")}
    assert impls == {min(tuning.seconds, key=tuning.seconds.get)}
    out = tiny.actions_per_setting(model, {n: (lambda m, n=n: m.set_elementwise(n)) for n in elementwise.IMPLS})
    assert (out["fused"] - out["torch"]).abs().max() < 0.05  # bf16 rounding flips at most


def test_measure_elementwise_counts_every_norm_and_glu():
    ticks = iter(range(100_000))
    seconds = autotune.measure_elementwise(4, 16, 32, 5, timer=lambda: float(next(ticks)))
    assert seconds == {"torch": 25.0, "fused": 25.0}  # (3 + 1 norms + 1 glu) x 5 layers, 1 tick each
