"""The `cpu` backend: a C++ kernel on the 2-bit packed weights, int8 activations, int32 sums.

The weights stay packed (2 bits a weight, the ``PackedTernary`` codes themselves: ``prepare``
keeps no int8 or float copy). Each call quantizes the activations per token exactly like
``quantize_activations_int8`` (same fp32 operations, fused in C++), takes the integer dot
products with u8 × s8 SIMD multiply-adds (AVX-512 VNNI, AVX-VNNI, AVX2, or portable code,
chosen at run time) as ``dot(w + 1, q) − sum(q)``, and applies the reference epilogue
``acc.float() * (scale / xs)``: the result is bit-identical to the reference backend.

Schedules (bitvla_ros/kernels/csrc/ternary_cpu_kernel.h): for short inputs the 2-bit fields
are decoded in registers right before the multiply-add; from ``PRE_DECODE_MIN_ROWS`` rows on, a
dozen weight rows at a time are decoded into a small per-thread u8 buffer (transient, ~K*12
bytes) that all row tiles reuse. With AVX-512 VNNI and 128 rows or more, the broadcast tiles
(ternary_cpu.cpp): 64 weight rows decoded into the VNNI layout (~K*64 bytes per thread, in L2),
each row's 4 activations of a k-group broadcast against them, 24 int32 accumulators of 16
finished outputs each: no horizontal sums (1.3-1.8x the pre-decoded rows at 512-626 rows).
Work is split over output columns with at::parallel_for.

The extension is compiled on first use (``available()`` or ``prepare()``, never at import) with
torch.utils.cpp_extension, about 20-40 s cold, and cached in ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``). Without a working compiler the backend reports itself unavailable
and says why once in the log. ``BITVLA_CPU_ISA=portable|avx2|avxvnni|avx512vnni`` forces an instruction set
(one the CPU has), e.g. to test the portable path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import torch

from bitvla_ros.quant import PackedTernary, quantize_activations_int8

log = logging.getLogger(__name__)

_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = ("ternary_cpu.cpp", "ternary_cpu_kernel.h", "norm_cpu.cpp", "unpack_cpu.cpp")
_ISAS = {"portable": 0, "avx2": 1, "avx512vnni": 2, "avxvnni": 3}
_FLOAT_INPUTS = (torch.float32, torch.bfloat16, torch.float16)

# Rows from which weights are decoded once per batch of rows into a buffer instead of in
# registers per row tile: equal at 16 rows, pre-decoding 5-15 % faster from 24 on (2-core AVX2
# EPYC, bench/cpu_kernel_sweep.py --schedules registers,predecode).
PRE_DECODE_MIN_ROWS = 16

_lock = threading.Lock()
_state: dict = {}


class _Ops:
    """The compiled operators (torch.ops.bitvla_ternary_cpu) behind plain methods."""

    def __init__(self):
        ops = torch.ops.bitvla_ternary_cpu
        # The overloads themselves: a few microseconds less per call than the overload packets.
        self.matmul, self.matmul_codes = ops.matmul.default, ops.matmul_codes.default
        self.quantize, self.isa_supported, self.best_isa = ops.quantize, ops.isa_supported, ops.best_isa
        self.rms_norm, self.relu2_glu = ops.rms_norm.default, ops.relu2_glu.default
        self.unpack_rows = ops.unpack_rows.default

    @staticmethod
    def isa_name(isa_id: int) -> str:
        return {v: k for k, v in _ISAS.items()}[isa_id]


def _build() -> _Ops:
    from torch.utils import cpp_extension

    digest = hashlib.sha256(b"".join((_CSRC / f).read_bytes() for f in _SOURCES)).hexdigest()[:12]
    cpp_extension.load(
        # The header is not part of torch's rebuild check; the digest in the name is.
        name=f"bitvla_ternary_cpu_{digest}",
        sources=[str(_CSRC / f) for f in _SOURCES if f.endswith(".cpp")],
        extra_include_paths=[str(_CSRC)],
        # No -march: each SIMD flavour carries its own target pragma and is picked at run time,
        # so one cached build runs on any x86-64. No fast-math: the fp32 epilogue must round like torch.
        extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,  # registers torch.ops.bitvla_ternary_cpu.*
        verbose=False,
    )
    return _Ops()


def _extension():
    """The compiled module, or None (the reason in ``_state['error']``, logged once)."""
    if "ext" in _state:
        return _state["ext"]
    with _lock:
        if "ext" not in _state:
            try:
                ext = _build()
                isa = _pick_isa(ext)
                _state["isa"] = isa
                log.info("cpu ternary kernel: built, using %s", ext.isa_name(isa))
            except Exception as e:  # no compiler / ninja, build error, unsupported forced ISA
                ext = None
                _state["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                log.warning("cpu ternary kernel unavailable: %s", _state["error"])
            _state["ext"] = ext
    return _state["ext"]


def _pick_isa(ext) -> int:
    forced = os.environ.get("BITVLA_CPU_ISA", "").strip().lower()
    if not forced:
        return ext.best_isa()
    if forced not in _ISAS:
        raise ValueError(f"BITVLA_CPU_ISA={forced!r}; expected one of {sorted(_ISAS)}")
    if not ext.isa_supported(_ISAS[forced]):
        raise RuntimeError(f"BITVLA_CPU_ISA={forced} but this CPU lacks that instruction set")
    return _ISAS[forced]


def _require():
    ext = _extension()
    if ext is None:
        raise RuntimeError(f"the cpu ternary kernel is not available: {_state.get('error')}")
    return ext


def isa() -> str:
    """The instruction set the kernel uses here ('avx512vnni', 'avxvnni', 'avx2' or 'portable')."""
    return _require().isa_name(_state["isa"])


def _isa_id(name: str | None) -> int:
    if name is None:
        return _state["isa"]
    ext = _require()
    if name not in _ISAS or not ext.isa_supported(_ISAS[name]):
        raise ValueError(f"instruction set {name!r} is not available here")
    return _ISAS[name]


# auto: registers below PRE_DECODE_MIN_ROWS rows, pre-decoded from there, and from 128 rows the
# broadcast tiles where the ISA has them (AVX-512 VNNI: VNNI-layout weight tiles decoded per
# thread, natural-order activations); tiles forces those at any M. The autotuner times auto
# against plain pre-decoding and configures the faster.
_SCHEDULES = {"auto": 0, "registers": 1, "predecode": 2, "tiles": 3}
_HALF_KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _check(x: torch.Tensor, weight: PackedTernary) -> torch.Tensor:
    """x as contiguous (M, K) rows. Kept lean: at M = 1 this wrapper is a fair part of the call."""
    k = weight.in_features
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the ternary weight expects {k}")
    if x.is_cuda or weight.codes.is_cuda or weight.scale.is_cuda:  # the C++ checks the rest
        raise ValueError("the cpu ternary kernel runs on CPU tensors only")
    rows = x if x.dim() == 2 else x.reshape(-1, k)
    return rows if rows.is_contiguous() else rows.contiguous()


def ternary_matmul_cpu(x: torch.Tensor, weight: PackedTernary, *, isa: str | None = None,
                       schedule: str | None = None, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """y = x · Wᵀ in fp32 (fp64 for fp64 input, like the reference), bit-identical to
    ``ternary_matmul_reference``; with ``out_dtype`` bf16 / fp16 that result rounded as
    ``.to(out_dtype)`` rounds it, written directly. ``isa`` and ``schedule`` ('auto',
    'registers', 'predecode', 'tiles') override the configured choices, for tests and benchmarks."""
    ext = _state.get("ext") or _require()
    rows = _check(x, weight)
    isa_id, mode = _isa_id(isa), _SCHEDULES[schedule or _state.get("schedule", "auto")]
    codes = weight.codes if weight.codes.is_contiguous() else weight.codes.contiguous()
    if rows.dtype in _FLOAT_INPUTS and weight.scale.dtype == torch.float32:
        kind = _HALF_KINDS.get(out_dtype, 0)
        y = ext.matmul(rows, codes, weight.in_features, weight.scale, isa_id, mode, PRE_DECODE_MIN_ROWS, kind)
        if y.dtype != out_dtype:
            y = y.to(out_dtype)
    else:
        # Other dtypes (fp64, ints): quantize in torch, exactly as the reference does, and keep
        # its epilogue (and so its output dtype).
        xq, xs = quantize_activations_int8(rows)
        acc = ext.matmul_codes(xq.contiguous(), codes, weight.in_features, isa_id, mode, PRE_DECODE_MIN_ROWS)
        y = acc.float() * (weight.scale / xs)
        if out_dtype != torch.float32:
            y = y.to(out_dtype)
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], weight.out_features)


def ternary_accumulate_cpu(xq: torch.Tensor, weight: PackedTernary, *, isa: str | None = None,
                           schedule: str | None = None) -> torch.Tensor:
    """The exact int32 accumulator Σ_k xq[m, k] · w[n, k] for int8 codes xq (…, K)."""
    ext = _require()
    rows = _check(xq, weight)
    if rows.dtype != torch.int8:
        raise ValueError(f"expected int8 activation codes, got {rows.dtype}")
    acc = ext.matmul_codes(rows, weight.codes.contiguous(), weight.in_features, _isa_id(isa),
                           _SCHEDULES[schedule or _state.get("schedule", "auto")], PRE_DECODE_MIN_ROWS)
    return acc.reshape(*xq.shape[:-1], weight.out_features)


def quantize_activations_cpu(x: torch.Tensor, *, isa: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's fused quantizer on its own: (int8 codes, fp32 scales (…, 1)), equal to
    ``quantize_activations_int8`` for fp32 / bf16 / fp16 input."""
    ext = _require()
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    q, xs = ext.quantize(rows, _isa_id(isa))
    return q.reshape(x.shape), xs.reshape(*x.shape[:-1], 1)


class CpuBackend:
    name = "cpu"
    devices = ("cpu",)

    @staticmethod
    def available() -> bool:
        return _extension() is not None

    @staticmethod
    def unavailable_reason() -> str:
        _extension()
        return _state.get("error", "")

    @staticmethod
    def prepare(weight: PackedTernary) -> PackedTernary:
        """The packed codes themselves (made contiguous if they are not): no other copy."""
        _require()
        codes = weight.codes
        if codes.device.type != "cpu" or codes.dtype != torch.uint8 or codes.dim() != 2:
            raise ValueError(f"the cpu backend needs 2-D uint8 CPU codes, got {codes.dtype} on {codes.device}")
        if codes.shape[1] != (weight.in_features + 3) // 4:
            raise ValueError(f"packed rows hold {codes.shape[1]} bytes, in_features={weight.in_features} "
                             f"needs {(weight.in_features + 3) // 4}")
        if not codes.is_contiguous():
            weight = PackedTernary(codes.contiguous(), weight.scale, weight.in_features)
        return weight

    @staticmethod
    def matmul(x: torch.Tensor, prepared: PackedTernary) -> torch.Tensor:
        return ternary_matmul_cpu(x, prepared)

    @staticmethod
    def matmul_to(x: torch.Tensor, prepared: PackedTernary, dtype: torch.dtype) -> torch.Tensor:
        """``matmul(x, prepared).to(dtype)`` in one pass (the rounding written by the kernel)."""
        return ternary_matmul_cpu(x, prepared, out_dtype=dtype)

    @staticmethod
    def variants() -> list[dict]:
        """Instruction sets x schedules the kernel can use here, for the autotuner to time (only
        the forced ISA under BITVLA_CPU_ISA)."""
        ext = _require()
        if os.environ.get("BITVLA_CPU_ISA", "").strip():
            isas = [ext.isa_name(_state["isa"])]
        else:
            isas = [n for n in ("avx512vnni", "avxvnni", "avx2") if ext.isa_supported(_ISAS[n])] or ["portable"]
        return [{"isa": n, "schedule": sch} for n in isas for sch in (("auto", "predecode") if n == "avx512vnni" else ("auto",))]

    @staticmethod
    def configure(isa: str, schedule: str = "auto") -> None:
        """Use this instruction set and schedule from now on (an ISA the CPU has)."""
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule {schedule!r}; expected one of {sorted(_SCHEDULES)}")
        _state["isa"] = _isa_id(isa)
        _state["schedule"] = schedule
