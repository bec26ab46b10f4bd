"""Keep the forward's activation buffers mapped between uses (glibc malloc), on CPU hosts.

A full-size forward allocates and frees tensors of 5-20 MB hundreds of times. glibc serves
allocations that size with a fresh mmap and returns them to the OS on free, so every new tensor
page-faults its pages in again (~4,200 faults and zeroing for 17 MB): measured on a 2-core EPYC,
one RMSNorm over (626, 6912) took 22.7 ms of CPU time that way and 4.4 ms with the settings
below, the whole difference being page faults (84k vs 13k). Serving them from the heap and
keeping up to ``TRIM_MB`` of freed heap lets the next forward reuse the same pages.

Between chunks that free heap is handed back (``release_free_heap``, called by the predictor
after each chunk): measured with the full-size model on a 2-core EPYC, the next chunk pays
+40 ms (2.36 vs 2.32 s) of page faults for it, and the process holds 1,009 MB instead of
1,110 MB while it waits for the next observation.

``BITVLA_CPU_HEAP``: ``1`` (default) as above; ``keep`` also keeps the free heap between chunks
(the last 2 %, ~100 MB more resident); ``0`` leaves malloc alone. A no-op where the C library is
not glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# Allocations up to this size come from the heap instead of their own mmap (the largest
# activation of a full-size forward is ~17 MB: 626 x 6912 fp32).
MMAP_THRESHOLD_MB = 64
# Free heap kept mapped before malloc returns it to the OS.
TRIM_MB = 128
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_done: dict[str, bool] = {}


def _mode() -> str:
    value = os.environ.get("BITVLA_CPU_HEAP", "1").strip().lower()
    return "off" if value in ("0", "off", "false", "no") else ("keep" if value == "keep" else "on")


def release_free_heap() -> bool:
    """Hand the heap a forward freed back to the OS, unless BITVLA_CPU_HEAP says keep (or off);
    whether it was released."""
    if _mode() != "on" or not _done.get("applied"):
        return False
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def keep_activation_pages() -> bool:
    """Apply the settings once per process; whether they are in effect."""
    if "applied" in _done:
        return _done["applied"]
    applied = False
    if _mode() != "off":
        try:
            libc = ctypes.CDLL("libc.so.6")
            applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MB << 20)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_MB << 20))
        except (OSError, AttributeError):  # not glibc
            applied = False
        log.info("cpu heap: activation-size allocations kept mapped: %s", applied)
    _done["applied"] = applied
    return applied
