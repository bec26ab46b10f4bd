"""Ternary matmul backends on packed weights, y = x · Wᵀ, behind one registry.

Auto order, fastest first, among those that run on the tensors' device and are available here:
cuda (Triton W2A8), cpu (packed C++ kernel), int8 (bitsandbytes / torch._int_mm; on CUDA only,
since `_int_mm` is slow on CPUs without VNNI), reference (unpack + matmul, the oracle).
Importing this package compiles nothing: each backend builds (C++) or imports (triton) on first use.
"""

from bitvla_ros.kernels.cpu import CpuBackend
from bitvla_ros.kernels.int8 import Int8Backend
from bitvla_ros.kernels.reference import ternary_matmul_reference
from bitvla_ros.kernels.registry import (
    AUTO_ORDER,
    available_backends,
    backend_names,
    get_backend,
    register_backend,
)
from bitvla_ros.kernels.triton_backend import CudaBackend

# Each insert at rank 0 goes in front: register the slowest first.
register_backend(Int8Backend, auto_rank=0)
register_backend(CpuBackend, auto_rank=0)
register_backend(CudaBackend, auto_rank=0)

__all__ = [
    "AUTO_ORDER",
    "CpuBackend",
    "CudaBackend",
    "Int8Backend",
    "available_backends",
    "backend_names",
    "get_backend",
    "register_backend",
    "ternary_matmul_reference",
]
