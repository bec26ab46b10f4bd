"""What every stage of the GPU check shares: the device, the problem sizes, the results file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bitvla_ros.quant import PackedTernary, pack_ternary

# BitNet-2B (q/o, k/v, gate/up, down) and SigLIP-L (q/k/v/out, fc1, fc2) as (N, K).
from bitvla_ros.kernels.constants import REAL_SHAPES  # noqa: E402,F401 - the one home of the shapes
REAL_ROWS = [1, 8, 64, 626]  # 626: the one-pass sequence of two 224 px images and a LIBERO prompt
TINY_SHAPES = [(33, 130), (7, 257)]
TINY_ROWS = [1, 3, 17, 40]


@dataclass
class Context:
    stage: str
    device: torch.device
    out_dir: Path
    reps: int | None = None
    preset: str | None = None
    results: Path = field(init=False)

    def __post_init__(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.results = self.out_dir / "gpu_check_results.jsonl"

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return REAL_SHAPES if self.gpu else TINY_SHAPES

    @property
    def rows(self) -> list[int]:
        return REAL_ROWS if self.gpu else TINY_ROWS

    def repeats(self, on_gpu: int) -> int:
        return self.reps or (on_gpu if self.gpu else 1)

    def model_preset(self) -> str:
        return self.preset or ("bitvla-3b" if self.gpu else "tiny")

    def record(self, **fields) -> None:
        """One JSON line in the results file (bench/gpu_stages/report.py gathers them)."""
        fields = {"stage": self.stage, "device": str(self.device), **fields}
        with self.results.open("a") as f:
            f.write(json.dumps(fields, default=str) + "\n")

    def sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize(self.device)

    # --- inputs ------------------------------------------------------------------------------

    def random_packed(self, n: int, k: int, seed: int, scale: float = 0.02) -> PackedTernary:
        gen = torch.Generator().manual_seed(seed)
        codes = torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)
        return PackedTernary(pack_ternary(codes).to(self.device), torch.tensor(scale, device=self.device), k)

    def random_x(self, m: int, k: int, seed: int, dtype=torch.bfloat16) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(m, k, generator=gen) * 2).to(self.device, dtype)


def say(*a) -> None:
    print(*a, flush=True)


def cfg_str(cfg) -> str:
    return (f"{cfg.kind} {cfg.block_m}x{cfg.block_n}x{cfg.block_k} s{cfg.split_k} "
            f"g{cfg.group_m} w{cfg.num_warps} st{cfg.num_stages}")


def triton_kernels():
    from bitvla_ros.kernels import triton_w2a8

    return triton_w2a8


def l2_flush(ctx: Context):
    """A callable that evicts the L2 (a 256 MiB memset), for timing cold weights; None off a GPU."""
    if not ctx.gpu:
        return None
    buf = torch.empty(256 << 20, dtype=torch.int8, device=ctx.device)
    return buf.zero_
