"""Reading safetensors files without copying them into memory.

`safetensors.torch.load_file` copies every tensor into process memory. For the deployment folder
we map the file instead: pages are read on first touch and shared with the page cache, so a
token-embedding table that is mostly never looked up stays on disk.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class SafetensorsError(ValueError):
    pass


def read_header(path: str | Path) -> tuple[dict, int]:
    """(header dict, byte offset where tensor data starts)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise SafetensorsError(f"{path} is not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path} has a corrupt safetensors header: {e}") from None
    return header, 8 + n


def load_mmap(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file as views of a private (copy-on-write) memory map."""
    header, start = read_header(path)
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        if start + end > size:
            raise SafetensorsError(f"{path} is truncated: tensor {name} ends past the end of the file")
        count = (end - begin) // torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(mm, dtype=dtype, count=count, offset=start + begin) if count else torch.empty(0, dtype=dtype)
        tensors[name] = t.view(info["shape"])
    return tensors


def data_offset(path: str | Path, name: str) -> int:
    """Byte offset in the file where tensor ``name``'s data starts."""
    header, start = read_header(path)
    if name not in header:
        raise SafetensorsError(f"{path} holds no tensor {name}")
    return start + header[name]["data_offsets"][0]
