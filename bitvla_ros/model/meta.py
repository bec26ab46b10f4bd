"""Modules built on the meta device without running their weight initializers.

A skeleton's storage is replaced by a checkpoint right after it is built, so initializing it is
wasted work. It also costs memory: an initializer on a meta tensor (e.g. nn.Embedding's normal_)
runs through torch's Python decompositions, whose first use imports torch._dynamo and with it
triton, about 70 MB resident on a CPU-only deployment that never compiles anything.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.nn import init

_INITIALIZERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


def _leave(tensor, *args, **kwargs):
    return tensor


@contextmanager
def meta_skeleton():
    """``with meta_skeleton(): model = BitVLA(config)``: shapes and dtypes only, no init, no storage.
    Not for use while another thread initializes modules (the initializers are swapped for the
    duration)."""
    saved = {name: getattr(init, name) for name in _INITIALIZERS}
    try:
        for name in _INITIALIZERS:
            setattr(init, name, _leave)
        with torch.device("meta"):
            yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)
