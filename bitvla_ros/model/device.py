"""The ``device`` setting: where the model and its batches live (auto, cpu, cuda, cuda:N).

``resolve_device`` turns the setting into a torch device and a sentence saying why, for the log,
``bitvla info`` and the policy node's /diagnostics. ``auto`` takes the current CUDA GPU when torch
sees one (a Jetson, an RTX card, a datacenter GPU alike) and the CPU otherwise. An explicit
``cuda`` on a machine without one is an error, never a silent CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEVICE_SETTINGS = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device setting this machine cannot honour, with what to do instead."""


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str


def gpu_name(index: int) -> str:
    cap = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)}, sm{cap[0]}{cap[1]}"


def _no_cuda() -> str:
    build = torch.version.cuda
    return f"torch {torch.__version__} sees no CUDA GPU" + ("" if build else ", being a CPU-only build")


def resolve_device(setting: str | torch.device | None = "auto") -> DeviceChoice:
    text = "auto" if setting is None else str(setting).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            return DeviceChoice(torch.device("cuda", index), f"auto: CUDA GPU cuda:{index} ({gpu_name(index)})")
        return DeviceChoice(torch.device("cpu"), f"auto: {_no_cuda()}, so the CPU")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"device must be {DEVICE_SETTINGS}, got {setting!r}") from None
    if device.type != "cuda":
        return DeviceChoice(device, f"requested: {device}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {text!r} was requested but {_no_cuda()}; use device 'auto' or 'cpu' "
                          "(or install the CUDA build of torch, requirements-gpu.txt)")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise DeviceError(f"device {text!r} was requested but this machine has {count} CUDA GPU(s), "
                          f"cuda:0..cuda:{count - 1}")
    return DeviceChoice(torch.device("cuda", index), f"requested: cuda:{index} ({gpu_name(index)})")
