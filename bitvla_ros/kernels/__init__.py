"""Ternary matmul backends on packed weights (reference, and later cpu, cuda, int8)."""

from bitvla_ros.kernels.reference import ternary_matmul_reference
from bitvla_ros.kernels.registry import (
    AUTO_ORDER,
    available_backends,
    backend_names,
    get_backend,
    register_backend,
)

__all__ = [
    "AUTO_ORDER",
    "available_backends",
    "backend_names",
    "get_backend",
    "register_backend",
    "ternary_matmul_reference",
]
