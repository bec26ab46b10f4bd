"""Backends behind one call, y = x · Wᵀ on packed ternary weights, and the choice among them.

A backend has ``name``, ``devices`` (the tensor device types it runs on; optionally
``auto_devices``, where `auto` may choose it), ``available()``,
``prepare(PackedTernary)`` (one-time layout work at load, e.g. a repack for a GPU kernel) and
``matmul(x, prepared) -> fp32 y``. ``auto`` takes the first backend in ``AUTO_ORDER`` that runs
on the tensors' device and is available on this machine. A backend whose availability depends on
the device type (int8: bitsandbytes on CUDA, ``_int_mm`` on a CPU) also has
``available_on(device_type)``; on CUDA that is what orders the backends by what this GPU supports
(Triton W2A8 on sm80+ with triton, else bitsandbytes' int8 matmul, else the reference).
``backend_reason`` says in words which one ``auto`` took and why the ones ahead of it were passed.
"""

from __future__ import annotations

import logging

import torch

from bitvla_ros.kernels.reference import ReferenceBackend

log = logging.getLogger(__name__)

_BACKENDS = {ReferenceBackend.name: ReferenceBackend}
# Fastest first; the cuda, cpu and int8 backends register themselves ahead of reference.
AUTO_ORDER = ["reference"]
_LOGGED: set[tuple[str, str]] = set()


def register_backend(backend, *, auto_rank: int | None = None) -> None:
    _BACKENDS[backend.name] = backend
    if auto_rank is not None and backend.name not in AUTO_ORDER:
        AUTO_ORDER.insert(auto_rank, backend.name)


def backend_names() -> list[str]:
    return list(_BACKENDS)


def _runs_on(backend, device_type: str) -> bool:
    return device_type in getattr(backend, "devices", ("cpu", "cuda"))


def _auto_on(backend, device_type: str) -> bool:
    """Whether `auto` may pick it for this device (a backend may run somewhere without being
    a good choice there)."""
    return device_type in getattr(backend, "auto_devices", getattr(backend, "devices", ("cpu", "cuda")))


def _available(backend, device_type: str) -> bool:
    on = getattr(backend, "available_on", None)
    return on(device_type) if on is not None else backend.available()


def _unavailable_reason(backend, device_type: str) -> str:
    on = getattr(backend, "unavailable_reason_on", None)
    reason = on(device_type) if on is not None else getattr(backend, "unavailable_reason", lambda: "")()
    return reason or "not available here"


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Backends usable here (on ``device``'s type, if given)."""
    dev = None if device is None else torch.device(device).type
    return [n for n, b in _BACKENDS.items() if (dev is None and b.available()) or
            (dev is not None and _runs_on(b, dev) and _available(b, dev))]


def backend_reason(name: str, device: str | torch.device = "cpu") -> str:
    """One line: the backend ``name`` resolves to on ``device`` and why (for logs and diagnostics)."""
    dev = torch.device(device).type
    chosen = get_backend(name, device)
    about = getattr(chosen, "describe", None)
    detail = f": {about(dev)}" if about is not None else ""
    if name != "auto":
        return f"requested{detail}"
    passed = [f"{c}: " + ("available, not chosen" if _available(_BACKENDS[c], dev) else
                          _unavailable_reason(_BACKENDS[c], dev))
              for c in AUTO_ORDER[:AUTO_ORDER.index(chosen.name)] if _auto_on(_BACKENDS[c], dev)]
    return f"auto for {dev} tensors{detail}" + (f"; passed over {'; '.join(passed)}" if passed else "")


def get_backend(name: str = "auto", device: str | torch.device = "cpu"):
    """The backend called ``name``, or for ``auto`` the best one available for ``device``."""
    dev = torch.device(device).type
    if name == "auto":
        for candidate in AUTO_ORDER:
            backend = _BACKENDS[candidate]
            if _auto_on(backend, dev) and _available(backend, dev):
                if (dev, candidate) not in _LOGGED:
                    _LOGGED.add((dev, candidate))
                    log.info("ternary kernel backend for %s tensors: auto -> %s", dev, candidate)
                return backend
        raise RuntimeError(f"no ternary kernel backend runs on {dev} tensors here")
    if name not in _BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected 'auto' or one of {backend_names()}")
    backend = _BACKENDS[name]
    if not _runs_on(backend, dev):
        raise RuntimeError(f"kernel backend {name!r} runs on {list(backend.devices)} tensors, not {dev}; "
                           f"use one of {available_backends(dev)} or 'auto'")
    if not _available(backend, dev):
        reason = _unavailable_reason(backend, dev)
        raise RuntimeError(f"kernel backend {name!r} is not available on this machine{': ' + reason if reason else ''}; "
                           f"available: {available_backends(dev)} (or use 'auto')")
    return backend
