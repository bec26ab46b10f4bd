"""Pure quantization math: ternary weights, int8 activations, 2-bit packing.

Nothing here knows about modules or models, so kernels/ and model/ can both build on it.
"""

from bitvla_ros.quant.packing import PackedTernary, pack_ternary, packed_row_bytes, unpack_ternary
from bitvla_ros.quant.ternary import (
    SCALE_EPS,
    activation_fake_quant,
    quantize_activations_int8,
    quantize_rows_int8,
    ternarize,
    weight_fake_quant,
)

__all__ = [
    "SCALE_EPS",
    "PackedTernary",
    "activation_fake_quant",
    "pack_ternary",
    "packed_row_bytes",
    "quantize_activations_int8",
    "quantize_rows_int8",
    "ternarize",
    "unpack_ternary",
    "weight_fake_quant",
]
