"""The ``cuda`` backend: Triton W2A8 kernels (kernels/triton_w2a8.py) behind the registry protocol.

Cheap to import on any machine: triton and the kernel module are imported only when the backend
is asked whether it is available or used. ``available()`` needs a CUDA device of compute
capability ≥ 8.0 (INT8 tensor cores) and an importable triton; ``unavailable_reason()`` says why
not, for logs.

``prepare`` keeps the packed codes as they are (no repack, no int8 or float copy of the weight) and
the scale as a one-element fp32 tensor on the same device. The first ``prepare`` on a device runs
a small self-check of every kernel kind against the reference backend (exact equality); a kind
that fails is logged and not used, and if the activation quantizer fails the backend refuses to
run. Set BITVLA_CUDA_SELFCHECK=0 to skip it.

The backend runs on CUDA tensors (``devices``); should a CPU tensor reach ``matmul`` anyway, it goes
to the next available backend of the auto order. With TRITON_INTERPRET=1 set (before triton is
imported) the backend is available without a GPU and also runs on CPU tensors, through Triton's
interpreter: that is how the tests run the node's whole CUDA path on a CPU machine. ``auto``
never picks it for CPU tensors (the interpreter is far slower than any CPU backend).
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from bitvla_ros.kernels.constants import interpreting
from bitvla_ros.quant import PackedTernary

log = logging.getLogger(__name__)

MIN_CAPABILITY = (8, 0)
# Kernel kinds to try, best first, by number of input rows.
_PREFERENCE_SMALL = ("gemv", "dot_swap", "dot")  # M ≤ 4
_PREFERENCE_MEDIUM = ("dot_swap", "dot", "gemv")  # 4 < M ≤ 16
_PREFERENCE_LARGE = ("dot", "dot_swap")  # M > 16


class W2A8Prepared:
    """What ``CudaBackend.prepare`` returns: the packed codes and scale, on their device."""

    def __init__(self, packed: PackedTernary):
        self.packed = packed
        self.codes = packed.codes if packed.codes.is_contiguous() else packed.codes.contiguous()
        scale = packed.scale
        if scale.dtype != torch.float32:
            scale = scale.float()
        self.scale = scale.reshape(1)  # a view of a 0-d fp32 buffer: follows in-place updates
        self.in_features = packed.in_features
        self._fallback = None

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def device(self) -> torch.device:
        return self.codes.device


def _kernels():
    from bitvla_ros.kernels import triton_w2a8

    return triton_w2a8


class _Devices:
    """``CudaBackend.devices``: CUDA tensors, and CPU tensors too under the Triton interpreter."""

    def __get__(self, obj, owner) -> tuple[str, ...]:
        return ("cpu", "cuda") if interpreting() else ("cuda",)


class CudaBackend:
    name = "cuda"
    devices = _Devices()
    auto_devices = ("cuda",)
    _status: tuple[bool, str] | None = None
    _checked: dict = {}  # device index -> set of broken kinds
    _lock = threading.Lock()

    # --- availability ------------------------------------------------------------------------

    @classmethod
    def _probe(cls) -> tuple[bool, str]:
        if interpreting() and not torch.cuda.is_available():
            try:
                import triton

                _kernels()
            except Exception as e:  # noqa: BLE001
                return False, f"triton is not importable: {type(e).__name__}: {e}"
            return True, f"Triton {triton.__version__} interpreter on CPU tensors (TRITON_INTERPRET=1)"
        if not torch.cuda.is_available():
            return False, f"torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})"
        try:
            cap = torch.cuda.get_device_capability()
            name = torch.cuda.get_device_name()
        except Exception as e:  # noqa: BLE001 - a broken driver must not break imports
            return False, f"cannot query the CUDA device: {e}"
        if cap < MIN_CAPABILITY:
            return False, (f"{name} has compute capability {cap[0]}.{cap[1]}; the Triton W2A8 kernels need "
                           f"≥ {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} (INT8 tensor cores)")
        try:
            import triton

            _kernels()
        except Exception as e:  # noqa: BLE001
            return False, f"triton is not importable: {type(e).__name__}: {e}"
        return True, f"{name} (sm{cap[0]}{cap[1]}), triton {triton.__version__}"

    @classmethod
    def status(cls) -> tuple[bool, str]:
        """(available, reason or description), probed once per process."""
        if cls._status is None:
            cls._status = cls._probe()
            if not cls._status[0]:
                log.debug("cuda backend unavailable: %s", cls._status[1])
        return cls._status

    @classmethod
    def available(cls) -> bool:
        return cls.status()[0]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        ok, why = cls.status()
        return None if ok else why

    @classmethod
    def describe(cls, device_type: str = "cuda") -> str:
        return "Triton W2A8, " + cls.status()[1]

    # --- protocol ----------------------------------------------------------------------------

    @classmethod
    def prepare(cls, weight: PackedTernary) -> W2A8Prepared:
        prepared = W2A8Prepared(weight)
        if prepared.device.type == "cuda":
            cls._ensure_checked(prepared.device)
        return prepared

    @classmethod
    def matmul(cls, x: torch.Tensor, prepared: W2A8Prepared) -> torch.Tensor:
        if not isinstance(prepared, W2A8Prepared):
            raise TypeError(f"the cuda backend needs weights from CudaBackend.prepare, got {type(prepared).__name__}")
        kernels = None
        if x.device.type != "cuda":
            kernels = _kernels() if interpreting() else None
            if kernels is None:
                return cls._fallback_matmul(x, prepared)
        if x.device != prepared.device:
            raise RuntimeError(
                f"input on {x.device} but the prepared ternary weight is on {prepared.device}; after moving a "
                "model, call set_backend() again so the layers prepare their weights on the new device"
            )
        if x.dtype == torch.float64:  # the reference quantizes fp64 in fp64; keep those semantics
            from bitvla_ros.kernels.reference import ternary_matmul_reference

            return ternary_matmul_reference(x, prepared.packed)
        kernels = kernels or _kernels()
        k = prepared.in_features
        m = x.numel() // k if k else 0
        kind = cls.pick_kind(m, x.device)
        return kernels.w2a8_matmul(x, prepared.codes, prepared.scale, prepared.in_features, kind=kind)

    # --- kernel choice and self-check --------------------------------------------------------

    @classmethod
    def pick_kind(cls, m: int, device: torch.device) -> str:
        broken = cls._checked.get(device.index, set()) if device.type == "cuda" else set()
        order = _PREFERENCE_SMALL if m <= 4 else _PREFERENCE_MEDIUM if m <= 16 else _PREFERENCE_LARGE
        for kind in order:
            if kind not in broken:
                return kind
        raise RuntimeError(f"every Triton W2A8 kernel kind failed its self-check on {device}: {sorted(broken)}")

    @classmethod
    def _ensure_checked(cls, device: torch.device) -> None:
        if device.index in cls._checked:
            return
        with cls._lock:
            if device.index in cls._checked:
                return
            if os.environ.get("BITVLA_CUDA_SELFCHECK", "1") == "0":
                cls._checked[device.index] = set()
                return
            with torch.cuda.device(device):
                broken = self_check(device)
            cls._checked[device.index] = broken

    @classmethod
    def _fallback_matmul(cls, x: torch.Tensor, prepared: W2A8Prepared) -> torch.Tensor:
        if prepared._fallback is None:
            from bitvla_ros.kernels.reference import ReferenceBackend
            from bitvla_ros.kernels.registry import AUTO_ORDER, get_backend

            backend = ReferenceBackend
            for candidate in AUTO_ORDER:
                if candidate == cls.name:
                    continue
                try:
                    backend = get_backend(candidate, x.device)  # raises if unavailable there
                    break
                except Exception:  # noqa: BLE001
                    continue
            if backend.name not in _WARNED_FALLBACK:
                _WARNED_FALLBACK.add(backend.name)
                log.warning("cuda backend got %s inputs; those layers use backend %r", x.device, backend.name)
            prepared._fallback = (backend, backend.prepare(prepared.packed))
        backend, fb = prepared._fallback
        return backend.matmul(x, fb)


_WARNED_FALLBACK: set = set()


# (M, N, K) per kind: one ragged problem (K not a multiple of 4, N not of 16) and one aligned one
# with split-K, at sizes that compile the same kernel variants the model's shapes use.
_CHECK_SHAPES = {
    "gemv": [(3, 37, 203), (1, 64, 1024)],
    "dot_swap": [(9, 37, 203), (16, 64, 1024)],
    "dot": [(40, 37, 203), (96, 256, 512)],
}


def self_check(device: torch.device) -> set[str]:
    """Run every kernel kind on small problems against the reference; return the kinds that fail.

    Raises if the activation quantizer itself is wrong (nothing could be trusted then).
    """
    from bitvla_ros.kernels.reference import ternary_matmul_reference
    from bitvla_ros.quant import pack_ternary, quantize_activations_int8

    kernels = _kernels()
    gen = torch.Generator().manual_seed(1234)
    x = (torch.randn(37, 203, generator=gen) * 3).to(device)
    x[0] = 0
    x[1, 7] = 1e4
    q, s = kernels.act_quant(x)
    rq, rs = quantize_activations_int8(x)
    if not (torch.equal(q, rq) and torch.equal(s, rs.reshape(-1))):
        raise RuntimeError(
            "Triton activation quantizer disagrees with quantize_activations_int8 on "
            f"{torch.cuda.get_device_name(device)}; use backend 'reference' (or 'int8') and report this"
        )
    broken = set()
    for kind, shapes in _CHECK_SHAPES.items():
        for m, n, k in shapes:
            codes = torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)
            w = PackedTernary(pack_ternary(codes).to(device), torch.tensor(0.0123, device=device), k)
            xin = torch.randn(m, k, generator=gen).to(device=device, dtype=torch.bfloat16)
            try:
                y = kernels.w2a8_matmul(xin, w.codes, w.scale, k, kind=kind)
                ok = torch.equal(y, ternary_matmul_reference(xin, w))
                detail = "" if ok else f"max |diff| {(y - ternary_matmul_reference(xin, w)).abs().max().item():.3g}"
            except Exception as e:  # noqa: BLE001 - a compiler failure disables the kind, not the backend
                ok, detail = False, f"{type(e).__name__}: {e}"
            if not ok:
                log.error("Triton W2A8 kernel %r failed its self-check at M=%d N=%d K=%d (%s); it will not be used",
                          kind, m, n, k, detail)
                broken.add(kind)
                break
    if broken == set(_CHECK_SHAPES):
        raise RuntimeError(f"every Triton W2A8 kernel kind failed its self-check on {device}; use backend 'reference'")
    return broken
