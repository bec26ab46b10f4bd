"""What the kernels, their checks and their benchmarks share: BitVLA's linear shapes and the switch
that says whether Triton interprets.

It lives in kernels/ because its users are the kernels (the Triton backend, the compile check),
bench/ and the tests, all of which may import kernels/; model/ holds the presets these shapes come
from, but kernels/ must not import model/ (test_model_bitvla checks that the bitvla-3b preset has
exactly these shapes). It imports nothing heavy (no triton), so the backend registry can ask
``interpreting()`` before deciding to import triton. The quantizers' scale floor ``SCALE_EPS`` stays
with the quantizers (bitvla_ros.quant.ternary), the bottom layer every kernel may import.
"""

from __future__ import annotations

import os

# The (N, K) of every ternary linear of the published model: BitNet b1.58 2B (q/o, k/v, gate/up,
# down) and its SigLIP-shaped encoder (q/k/v/out, fc1, fc2).
REAL_SHAPES = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912), (1152, 1152), (4304, 1152), (1152, 4304)]


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
