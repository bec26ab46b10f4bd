"""Backends behind one call, y = x · Wᵀ on packed ternary weights, and the choice among them.

A backend has ``name``, ``available()``, ``prepare(PackedTernary)`` (one-time layout work at load,
e.g. a repack for a GPU kernel) and ``matmul(x, prepared) -> fp32 y``. ``auto`` takes the first
available backend in ``AUTO_ORDER``.
"""

from __future__ import annotations

import logging

from bitvla_ros.kernels.reference import ReferenceBackend

log = logging.getLogger(__name__)

_BACKENDS = {ReferenceBackend.name: ReferenceBackend}
# Fastest first; later issues register cuda, int8 and cpu ahead of reference.
AUTO_ORDER = ["reference"]


def register_backend(backend, *, auto_rank: int | None = None) -> None:
    _BACKENDS[backend.name] = backend
    if auto_rank is not None and backend.name not in AUTO_ORDER:
        AUTO_ORDER.insert(auto_rank, backend.name)


def backend_names() -> list[str]:
    return list(_BACKENDS)


def available_backends() -> list[str]:
    return [name for name, b in _BACKENDS.items() if b.available()]


def get_backend(name: str = "auto"):
    """The backend called ``name``, or the best available one for ``auto``."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            if _BACKENDS[candidate].available():
                log.info("ternary kernel backend: auto -> %s", candidate)
                return _BACKENDS[candidate]
        raise RuntimeError("no ternary kernel backend is available (the reference backend always should be)")
    if name not in _BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected 'auto' or one of {backend_names()}")
    backend = _BACKENDS[name]
    if not backend.available():
        raise RuntimeError(
            f"kernel backend {name!r} is not available on this machine; available: {available_backends()} "
            "(or use backend 'auto')"
        )
    return backend
