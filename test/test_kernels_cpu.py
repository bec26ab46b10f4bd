"""The `cpu` kernel backend (C++ on 2-bit packed weights): bit-identical to the reference backend.

The first test that needs the kernel compiles it (about 20-40 s cold, cached after that in
TORCH_EXTENSIONS_DIR, which conftest points at .cache/torch_extensions). Every instruction set the
CPU has is tested, the portable one included, with both schedules (weights decoded in
registers, and pre-decoded rows), so the SIMD paths and the fallback are all checked here.
"""

import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitvla_ros.kernels import AUTO_ORDER, backend_names, get_backend, ternary_matmul_reference
from bitvla_ros.kernels import cpu
from bitvla_ros.kernels.cpu import (
    CpuBackend,
    quantize_activations_cpu,
    ternary_accumulate_cpu,
    ternary_matmul_cpu,
)
from bitvla_ros.quant import PackedTernary, pack_ternary, quantize_activations_int8, unpack_ternary

REPO = Path(__file__).resolve().parent.parent
SCHEDULES = ["registers", "predecode", "tiles"]  # tiles: pre-decoded where the ISA has none


@pytest.fixture(scope="module")
def isas():
    """Instruction sets to test: every one this CPU runs (compiles the kernel on first use)."""
    if not CpuBackend.available():
        pytest.skip(f"cpu kernel not built here: {CpuBackend.unavailable_reason()}")
    ops = cpu._require()
    return [name for name, i in cpu._ISAS.items() if ops.isa_supported(i)]


def packed(n, k, seed=0, scale=0.0173):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    return PackedTernary(pack_ternary(codes), torch.tensor(scale), k)


def assert_same_as_reference(x, w, isas, schedules=SCHEDULES):
    ref = ternary_matmul_reference(x, w)
    for isa, schedule in itertools.product(isas, schedules):
        y = ternary_matmul_cpu(x, w, isa=isa, schedule=schedule)
        assert y.dtype == ref.dtype and y.shape == ref.shape
        assert torch.equal(y, ref), f"isa={isa} schedule={schedule} shape x={tuple(x.shape)} w={w.shape}"


def test_random_inputs_match_reference(isas):
    g = torch.Generator().manual_seed(1)
    for n, k, m in [(64, 256, 5), (130, 512, 33), (48, 1152, 70), (37, 2560, 2)]:
        w = packed(n, k, seed=n)
        x = torch.randn(m, k, generator=g) * 4
        assert_same_as_reference(x, w, isas)
        assert torch.equal(CpuBackend.matmul(x, CpuBackend.prepare(w)), ternary_matmul_reference(x, w))


@pytest.mark.parametrize("k", [1, 3, 5, 63, 130, 257, 1000])
def test_odd_shapes_match_reference(isas, k):
    g = torch.Generator().manual_seed(k)
    for n in (1, 7, 33):
        w = packed(n, k, seed=k * 100 + n)
        for m in (1, 3, 17, 600):
            x = torch.randn(m, k, generator=g)
            assert_same_as_reference(x, w, isas)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_activation_rows(isas, dtype):
    k = 300
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, k, generator=g) * 1e-3
    x[0] = 0.0  # all zero: scale from the 1e-5 floor, all codes 0
    x[1, 17] = 1e30  # one huge value, the rest tiny: a single nonzero code
    x[2] = torch.full((k,), -3.5)  # constant row
    x[3] = torch.arange(k) * 0.5 - 40  # values on half steps: round-half-even at work
    x[3, 0] = 127.0
    x[4] = 1e-7  # below the scale floor
    x[5, ::2] = -1e30  # huge values both ways
    x[5, 1::2] = 1e30
    x = x.to(dtype)
    assert_same_as_reference(x, packed(29, k, seed=3), isas)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_input_dtypes_and_3d_inputs(isas, dtype):
    g = torch.Generator().manual_seed(4)
    w = packed(19, 200, seed=5)
    x = (torch.randn(2, 9, 200, generator=g) * 2).to(dtype)  # (B, L, K)
    assert_same_as_reference(x, w, isas)
    assert ternary_matmul_cpu(x, w).shape == (2, 9, 19)


def test_non_contiguous_input_and_empty_batch(isas):
    w = packed(11, 40, seed=6)
    x = torch.randn(40, 7).t()  # (7, 40), not contiguous
    assert_same_as_reference(x, w, isas)
    y = ternary_matmul_cpu(torch.randn(0, 40), w)
    assert y.shape == (0, 11) and y.dtype == torch.float32


def test_integer_accumulator_is_exact(isas):
    g = torch.Generator().manual_seed(7)
    k, n, m = 777, 45, 21
    w = packed(n, k, seed=8)
    q = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    q[0] = -128  # the extreme code, which per-token quantization itself never produces
    q[1] = 127
    expected = q.long() @ unpack_ternary(w.codes, k, torch.int64).t()
    for isa, schedule in itertools.product(isas, SCHEDULES):
        acc = ternary_accumulate_cpu(q, w, isa=isa, schedule=schedule)
        assert acc.dtype == torch.int32
        assert torch.equal(acc.long(), expected), (isa, schedule)


def test_narrow_accumulators_cannot_overflow(isas):
    # Every product at its largest: codes 2 (w = +1) and even 3 (not a ternary code; unpacks to
    # +2), activations all -128 or 127, over enough K that the int16 lanes are widened many times.
    k = 4000
    codes = torch.tensor([[0xAA], [0xFF], [0x00], [0x55]], dtype=torch.uint8).expand(4, k // 4).contiguous()
    w = PackedTernary(codes, torch.tensor(1.0), k)
    q = torch.stack([torch.full((k,), -128), torch.full((k,), 127), torch.arange(k) % 256 - 128]).to(torch.int8)
    expected = q.long() @ unpack_ternary(codes, k, torch.int64).t()
    for isa, schedule in itertools.product(isas, SCHEDULES):
        assert torch.equal(ternary_accumulate_cpu(q, w, isa=isa, schedule=schedule).long(), expected), (isa, schedule)


def test_fused_quantizer_matches_torch(isas):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(40, 333, generator=g) * torch.logspace(-6, 6, 40)[:, None]
    x[0, :20] = torch.arange(20) + 0.5
    x[0, 20] = 127.0
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        xd = x.to(dtype) if dtype != torch.float16 else x.clamp(-6e4, 6e4).to(dtype)
        q_ref, s_ref = quantize_activations_int8(xd)
        for isa in isas:
            q, s = quantize_activations_cpu(xd, isa=isa)
            assert torch.equal(q, q_ref) and torch.equal(s, s_ref), (dtype, isa)


def test_prepared_weight_is_the_packed_codes_only(isas):
    w = packed(33, 130, seed=10)
    prepared = CpuBackend.prepare(w)
    tensors = {name: t for name, t in vars(prepared).items() if isinstance(t, torch.Tensor)}
    assert set(tensors) == {"codes", "scale"}
    assert prepared.codes.dtype == torch.uint8 and prepared.codes.shape == (33, 33)
    assert prepared.codes.data_ptr() == w.codes.data_ptr()  # no copy at all
    assert prepared.scale.numel() == 1
    # Non-contiguous codes are made contiguous, still as packed uint8.
    wide = torch.zeros(33, 66, dtype=torch.uint8)
    wide[:, ::2] = w.codes
    strided = CpuBackend.prepare(PackedTernary(wide[:, ::2], w.scale, 130))
    assert strided.codes.is_contiguous() and torch.equal(strided.codes, w.codes)


def test_registered_ahead_of_reference_and_used_by_bitlinear(isas):
    from bitvla_ros.model.bitlinear import BitLinear

    assert "cpu" in backend_names()
    assert AUTO_ORDER.index("cpu") < AUTO_ORDER.index("reference")
    if "int8" in AUTO_ORDER:
        assert AUTO_ORDER.index("cpu") < AUTO_ORDER.index("int8")
    assert get_backend("auto", "cpu") is CpuBackend
    torch.manual_seed(0)
    layer = BitLinear(70, 24).to_deploy("cpu")
    assert layer.backend_name == "cpu"
    x = torch.randn(3, 5, 70)
    with torch.no_grad():
        y_cpu = layer(x)
        layer.set_backend("reference")
        assert torch.equal(y_cpu, layer(x))


def test_unbuildable_kernel_reports_unavailable(monkeypatch, caplog):
    def broken_build():
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setattr(cpu, "_build", broken_build)
    with caplog.at_level(logging.WARNING, logger="bitvla_ros.kernels.cpu"):
        assert CpuBackend.available() is False
        assert CpuBackend.available() is False
    assert "no C++ compiler" in CpuBackend.unavailable_reason()
    assert sum("unavailable" in r.message for r in caplog.records) == 1  # logged once
    with pytest.raises(RuntimeError, match="not available"):
        CpuBackend.prepare(packed(2, 8))


def test_import_registers_without_compiling():
    code = (
        "import bitvla_ros.kernels as k, bitvla_ros.kernels.cpu as c\n"
        "assert 'cpu' in k.backend_names() and not c._state, c._state\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(REPO / ".cache" / "no_such_extensions_dir"))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)
    assert not (REPO / ".cache" / "no_such_extensions_dir").exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rounded_output_equals_the_reference_rounded(isas, dtype):
    """out_dtype / matmul_to write the fp32 result rounded as .to(dtype) rounds it."""
    for m, n, k in [(3, 17, 37), (130, 70, 300)]:  # 130 rows: the automatic schedule takes tiles
        w = packed(n, k, seed=m)
        x = (torch.randn(m, k) * 3).to(dtype)
        ref = ternary_matmul_reference(x, w).to(dtype)
        for isa, schedule in itertools.product(isas, SCHEDULES + ["auto"]):
            y = ternary_matmul_cpu(x, w, isa=isa, schedule=schedule, out_dtype=dtype)
            assert y.dtype == dtype and torch.equal(y, ref), (isa, schedule, m)
        assert torch.equal(CpuBackend.matmul_to(x, CpuBackend.prepare(w), dtype), ref)


def test_configured_variant_is_used_and_every_variant_is_exact(isas):
    w, x = packed(70, 300), torch.randn(140, 300)
    ref = ternary_matmul_reference(x, w)
    before = cpu.isa(), cpu._state.get("schedule", "auto")
    try:
        for variant in CpuBackend.variants():
            CpuBackend.configure(**variant)
            assert cpu.isa() == variant["isa"]
            assert torch.equal(CpuBackend.matmul(x, CpuBackend.prepare(w)), ref), variant
    finally:
        CpuBackend.configure(*before)
    with pytest.raises(ValueError, match="schedule"):
        CpuBackend.configure(before[0], "fastest")
