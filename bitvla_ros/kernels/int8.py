"""The int8 fallback: ternary codes held as int8 and an int8 × int8 → int32 matmul.

For machines the packed paths do not cover (a GPU without the Triton W2A8 kernels, i.e. older than
sm80 or without triton; a CPU where the C++ kernel cannot be built). bitsandbytes' int8 matmul
runs it on CUDA (``available_on("cuda")`` runs a tiny one on this GPU once, so `auto` takes it only
where it works); `torch._int_mm` (oneDNN, VNNI where the CPU has it) on the CPU. The CUDA and CPU
paths are separate functions. It pays for its reach in memory: `prepare` unpacks each matrix to
int8, four times the packed size.

On a CPU a second variant, ``weights=packed``, keeps only the packed codes and decodes one band
of ``BAND_ROWS`` weight rows at a time into int8 right before its `_int_mm` (csrc/unpack_cpu.cpp):
oneDNN's GEMM (AMX tiles on a Xeon that has them) on the packed model's memory, for the cost of
decoding each weight once per matmul. The autotuner times both variants.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bitvla_ros.quant import PackedTernary, quantize_activations_int8, unpack_ternary

# bitsandbytes' CUDA int8 matmul wants K in multiples of 4; 16 keeps every vendor kernel happy.
_CUDA_K_MULTIPLE = 16
# Weight rows decoded per `_int_mm` by the packed variant: 1,024 x 2,560 int8 is 2.6 MB, about one
# core's share of L2 + L3 slice, and wide enough that oneDNN's blocking stays efficient.
BAND_ROWS = 1024
WEIGHTS = ("int8", "packed")
_config = {"weights": "int8"}


@dataclass(frozen=True)
class Int8Weight:
    codes: torch.Tensor  # int8 (N, K_padded), K-padding is zero
    scale: torch.Tensor
    in_features: int

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]


@functools.lru_cache(maxsize=1)
def _cpu_int_mm_works() -> bool:
    try:
        a = torch.ones(1, 8, dtype=torch.int8)
        return int(torch._int_mm(a, a.t())[0, 0]) == 8
    except (RuntimeError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def _bitsandbytes():
    try:
        import bitsandbytes.functional as bnb_f
    except ImportError:
        return None
    return bnb_f


@functools.lru_cache(maxsize=None)
def cuda_int8_status(index: int | None = None) -> tuple[bool, str]:
    """(usable, description or reason): bitsandbytes' int8 matmul on CUDA device ``index``
    (default: the current one), checked on a tiny product once per process."""
    if not torch.cuda.is_available():
        return False, "no CUDA device for bitsandbytes' int8 matmul"
    bnb_f = _bitsandbytes()
    if bnb_f is None:
        return False, "bitsandbytes is not installed (pip install -r requirements-gpu.txt)"
    index = torch.cuda.current_device() if index is None else index
    cap = torch.cuda.get_device_capability(index)
    gpu = f"{torch.cuda.get_device_name(index)} (sm{cap[0]}{cap[1]})"
    try:
        a = torch.ones(2, _CUDA_K_MULTIPLE, dtype=torch.int8, device=torch.device("cuda", index))
        ok = int(bnb_f.int8_linear_matmul(a, a)[0, 0]) == _CUDA_K_MULTIPLE
    except Exception as e:  # noqa: BLE001 - an unsupported GPU or a broken install: not usable
        return False, f"bitsandbytes' int8 matmul does not run on {gpu}: {type(e).__name__}: {e}"
    if not ok:
        return False, f"bitsandbytes' int8 matmul gives wrong sums on {gpu}"
    import bitsandbytes

    return True, f"bitsandbytes {bitsandbytes.__version__} int8 matmul on {gpu}"


class Int8Backend:
    name = "int8"
    devices = ("cpu", "cuda")
    # On CPUs `_int_mm` is fast only with VNNI or AMX (and slower than the reference without it):
    # the static `auto` order takes it for CUDA tensors only; on a CPU the autotuner
    # (kernels/autotune.py) times it against the cpu kernel on the model's shapes, or a user
    # chooses it by name.
    auto_devices = ("cuda",)

    @staticmethod
    def available() -> bool:
        return _cpu_int_mm_works() or cuda_int8_status()[0]

    @staticmethod
    def unavailable_reason() -> str:
        return "torch._int_mm does not run here and bitsandbytes has no CUDA device"

    @staticmethod
    def available_on(device_type: str) -> bool:
        return cuda_int8_status()[0] if device_type == "cuda" else _cpu_int_mm_works()

    @staticmethod
    def unavailable_reason_on(device_type: str) -> str:
        return cuda_int8_status()[1] if device_type == "cuda" else "torch._int_mm does not run on this CPU"

    @staticmethod
    def describe(device_type: str) -> str:
        return cuda_int8_status()[1] if device_type == "cuda" else "torch._int_mm"

    @staticmethod
    def variants() -> list[dict]:
        """For the CPU autotuner: int8 weights held whole, and (where the cpu kernel's extension
        is built) packed weights decoded band by band."""
        return [{"weights": w} for w in WEIGHTS if w == "int8" or _unpacker() is not None]

    @staticmethod
    def expands_weights(weights: str = "int8") -> bool:
        """Whether this variant holds the weights unpacked (4x the packed bytes)."""
        return weights == "int8"

    @staticmethod
    def configure(weights: str = "int8") -> None:
        if weights not in WEIGHTS:
            raise ValueError(f"int8 backend weights {weights!r}; expected one of {WEIGHTS}")
        _config["weights"] = weights

    @staticmethod
    def prepare(weight: PackedTernary) -> Int8Weight | PackedTernary:
        if _config["weights"] == "packed" and weight.codes.device.type == "cpu" and _unpacker() is not None:
            codes = weight.codes.contiguous()
            return weight if codes is weight.codes else PackedTernary(codes, weight.scale, weight.in_features)
        codes = unpack_ternary(weight.codes, weight.in_features, torch.int8)
        if codes.is_cuda and codes.shape[1] % _CUDA_K_MULTIPLE:
            codes = F.pad(codes, (0, -codes.shape[1] % _CUDA_K_MULTIPLE))
        return Int8Weight(codes.contiguous(), weight.scale, weight.in_features)

    @staticmethod
    def matmul(x: torch.Tensor, w: Int8Weight | PackedTernary) -> torch.Tensor:
        k = w.in_features
        if x.shape[-1] != k:
            raise ValueError(f"input has {x.shape[-1]} features, the ternary weight expects {k}")
        xq, xs = quantize_activations_int8(x.reshape(-1, k))
        if isinstance(w, PackedTernary):
            acc = _int8_matmul_cpu_bands(xq, w)
        else:
            acc = _int8_matmul_cuda(xq, w) if xq.is_cuda else _int8_matmul_cpu(xq, w)
        y = acc.float() * (w.scale / xs)
        return y.reshape(*x.shape[:-1], w.out_features)


def _int8_matmul_cuda(xq: torch.Tensor, w: Int8Weight) -> torch.Tensor:
    """int32 (M, N) = xq · codesᵀ by bitsandbytes on the GPU (K zero-padded as ``prepare`` did)."""
    if w.codes.shape[1] != xq.shape[1]:
        xq = F.pad(xq, (0, w.codes.shape[1] - xq.shape[1]))
    bnb_f = _bitsandbytes()
    if bnb_f is None:
        raise RuntimeError("the int8 backend on CUDA needs bitsandbytes (pip install -r requirements-gpu.txt)")
    return bnb_f.int8_linear_matmul(xq, w.codes)


def _int8_matmul_cpu(xq: torch.Tensor, w: Int8Weight) -> torch.Tensor:
    return torch._int_mm(xq, w.codes.t())


def _unpacker():
    """The cpu extension's band decoder, or None where the extension cannot be built."""
    from bitvla_ros.kernels import cpu

    ext = cpu._extension()
    return ext.unpack_rows if ext is not None else None


def _int8_matmul_cpu_bands(xq: torch.Tensor, w: PackedTernary) -> torch.Tensor:
    """int32 (M, N) = xq · codesᵀ, ``BAND_ROWS`` weight rows decoded at a time."""
    unpack = _unpacker()
    n = w.codes.shape[0]
    acc = torch.empty(xq.shape[0], n, dtype=torch.int32)
    for r0 in range(0, n, BAND_ROWS):
        rows = min(BAND_ROWS, n - r0)
        acc[:, r0:r0 + rows] = torch._int_mm(xq, unpack(w.codes, r0, rows, w.in_features).t())
    return acc
