"""The GEMM form of attention against torch's SDPA, and the per-machine choice between them."""

import pytest
import torch

import tiny
from bitvla_ros.kernels import attention, autotune


def _qkv(b=2, h=8, kvh=2, n=12, length=12, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=g).to(dtype), torch.randn(b, kvh, length, d, generator=g).to(dtype),
            torch.randn(b, kvh, length, d, generator=g).to(dtype))


def _masks(b, n, length):
    keys = torch.ones(b, 1, 1, length, dtype=torch.bool)
    keys[1, ..., length - 3:] = False  # right padding in the second example
    tri = torch.ones(n, length, dtype=torch.bool).tril(diagonal=length - n)
    return {"none": None, "keys": keys, "causal": tri, "both": keys & tri}


@pytest.mark.parametrize("heads", [(8, 2), (4, 4)], ids=["gqa", "mha"])
@pytest.mark.parametrize("mask_kind", ["none", "keys", "causal", "both"])
def test_gemm_equals_sdpa(heads, mask_kind):
    h, kvh = heads
    q, k, v = _qkv(h=h, kvh=kvh, n=10, length=14)
    mask = _masks(2, 10, 14)[mask_kind]
    torch.testing.assert_close(attention.gemm(q, k, v, mask), attention.sdpa(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_gemm_in_bf16_stays_within_bf16_rounding_of_fp32():
    q, k, v = _qkv(h=8, kvh=2, n=32, length=32)
    exact = attention.sdpa(q, k, v)
    got = attention.gemm(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert (got - exact).abs().max() < 0.05  # a few bf16 steps of values of magnitude ~1


def test_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="expected one of"):
        attention.get("flash3")


def test_a_deployed_cpu_model_takes_the_measured_attention(tmp_path, monkeypatch):
    monkeypatch.setenv("BITVLA_CACHE_DIR", str(tmp_path))
    model = tiny.model(seed=1).to_deploy("reference")
    tuning = model.attention_tuning
    assert tuning is not None and tuning.source == "measured"
    assert set(tuning.seconds) == set(attention.IMPLS)
    assert model.attention_name == min(tuning.seconds, key=tuning.seconds.get)
    # the same shapes on the same machine: read back from the cache
    model.set_backend("reference")
    assert model.attention_tuning.source == "cache" and model.attention_name == tuning.choice.backend
    # both give the same actions up to float rounding, which an int8 activation quantizer can turn
    # into a flipped step now and then
    out = tiny.actions_per_setting(model, {n: (lambda m, n=n: m.set_attention(n)) for n in attention.IMPLS})
    assert (out["gemm"] - out["sdpa"]).abs().max() < 0.05


def test_without_autotune_attention_is_the_default(monkeypatch):
    monkeypatch.setenv("BITVLA_AUTOTUNE", "0")
    model = tiny.model(seed=1).to_deploy("reference")
    assert model.attention_tuning is None and model.attention_name == attention.DEFAULT


def test_measure_attention_times_every_implementation():
    shapes = [autotune.AttentionShape(4, 2, 8, 16, 3)]
    ticks = iter(range(10_000))
    seconds = autotune.measure_attention(shapes, timer=lambda: float(next(ticks)))
    assert set(seconds) == set(attention.IMPLS) and all(s == 3.0 for s in seconds.values())
