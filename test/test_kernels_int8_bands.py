"""The int8 backend's packed variant: weights decoded band by band, exact like every backend."""

import pytest
import torch

from bitvla_ros.kernels import autotune, cpu, int8
from bitvla_ros.kernels.reference import ReferenceBackend
from bitvla_ros.quant import PackedTernary, pack_ternary

pytestmark = pytest.mark.skipif(cpu._extension() is None or not int8._cpu_int_mm_works(),
                                reason="needs the cpu kernel extension and torch._int_mm")


def _weight(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return PackedTernary(pack_ternary(torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)),
                         torch.tensor(0.37), k)


@pytest.mark.parametrize("k", [7, 64, 65, 2561])
def test_band_decoder_is_the_packing_inverse(k):
    codes = torch.randint(-1, 2, (9, k), dtype=torch.int8)
    got = cpu._extension().unpack_rows(pack_ternary(codes), 2, 6, k)
    assert torch.equal(got, codes[2:8])


@pytest.mark.parametrize("m", [1, 17, 130])
def test_packed_variant_equals_the_reference_bit_for_bit(m, monkeypatch):
    monkeypatch.setattr(int8, "BAND_ROWS", 24)  # several bands and a ragged last one
    backend = int8.Int8Backend()
    w = _weight(70, 96, seed=m)
    x = torch.randn(m, 96).bfloat16()
    expected = ReferenceBackend.matmul(x, ReferenceBackend.prepare(w))
    try:
        backend.configure(weights="packed")
        prepared = backend.prepare(w)
        assert isinstance(prepared, PackedTernary) and prepared.codes.dtype == torch.uint8  # nothing unpacked kept
        assert torch.equal(backend.matmul(x, prepared), expected)
    finally:
        backend.configure(weights="int8")
    assert torch.equal(backend.matmul(x, backend.prepare(w)), expected)


def test_autotune_offers_both_int8_variants_and_knows_which_expands():
    cands = [c for c in autotune.candidates("cpu") if c.backend == "int8"]
    assert {c.label for c in cands} == {"int8[weights=int8]", "int8[weights=packed]"}
    assert autotune.expanding_labels(cands) == ["int8[weights=int8]"]


def test_unpacked_weights_must_be_clearly_faster_to_be_chosen():
    expanding = ["int8[weights=int8]"]
    close = {"cpu": 1.05, "int8[weights=int8]": 1.0, "int8[weights=packed]": 1.2}
    assert autotune.select(close, expanding).label == "cpu"  # 5 % is not worth 4x the weight memory
    far = {"cpu": 1.5, "int8[weights=int8]": 1.0, "int8[weights=packed]": 1.2}
    assert autotune.select(far, expanding).label == "int8[weights=int8]"
    assert autotune.select({"int8[weights=int8]": 1.0}, expanding).label == "int8[weights=int8]"  # nothing else
