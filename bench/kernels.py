"""Ternary matmul backends against dense torch matmul, at BitVLA's linear shapes.

For each (N, K) weight shape and M rows: median milliseconds of fp32 and bf16 `F.linear` (dense
baselines, same process) and of every available kernel backend on packed weights, with the
speed-up over fp32, and the bytes each backend keeps per weight.

    .venv/bin/python bench/kernels.py [--rows 1,8,64,626] [--repeats 15] [--backends cpu,int8,...]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import median, threads, time_calls

from bitvla_ros.kernels import available_backends, get_backend
from bitvla_ros.kernels.constants import REAL_SHAPES as SHAPES
from bitvla_ros.quant import PackedTernary, pack_ternary


def prepared_bytes(prepared) -> int:
    return sum(t.numel() * t.element_size() for t in vars(prepared).values() if isinstance(t, torch.Tensor))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,8,64,626")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--backends", default=",".join(b for b in available_backends("cpu")))
    p.add_argument("--shapes", default="", help="N×K list like 2560x2560,640x2560 (default: all)")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    rows = [int(m) for m in args.rows.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    backends = [get_backend(b, "cpu") for b in args.backends.split(",")]
    print(f"ternary matmul on CPU, {threads()}; median of {args.repeats} after warm-up; ms (speed-up vs fp32)")
    header = f"{'N x K':>11s} {'M':>4s} {'fp32':>8s} {'bf16':>13s}" + "".join(f" {b.name:>15s}" for b in backends)
    print(header)
    summary = {b.name: [] for b in backends}
    gen = torch.Generator().manual_seed(0)
    for n, k in shapes:
        codes = torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)
        packed = PackedTernary(pack_ternary(codes), torch.tensor(0.02), k)
        w32 = codes.float() * 0.02
        w16 = w32.bfloat16()
        prepared = {b.name: b.prepare(packed) for b in backends}
        for m in rows:
            x = torch.randn(m, k, generator=gen)
            x16 = x.bfloat16()
            repeats = max(3, args.repeats // (4 if m >= 600 else 1))
            fp32 = median(time_calls(lambda: F.linear(x, w32), repeats)) * 1e3
            bf16 = median(time_calls(lambda: F.linear(x16, w16), repeats)) * 1e3
            line = f"{n:>5d}x{k:<5d} {m:4d} {fp32:8.2f} {bf16:7.2f} ({fp32 / bf16:3.1f}x)"
            for b in backends:
                ms = median(time_calls(lambda: b.matmul(x, prepared[b.name]), repeats)) * 1e3
                summary[b.name].append((m, fp32 / ms))
                line += f" {ms:8.2f} ({fp32 / ms:4.1f}x)"
            print(line, flush=True)
    print("\nbytes kept per weight: fp32 4, bf16 2, " + ", ".join(
        f"{b.name} {prepared_bytes(b.prepare(PackedTernary(pack_ternary(torch.zeros(64, 256, dtype=torch.int8)), torch.tensor(1.0), 256))) / (64 * 256):.2f}"
        for b in backends))
    print("median speed-up vs fp32 dense over all shapes:")
    for name, pairs in summary.items():
        by_m = {m: median([r for mm, r in pairs if mm == m]) for m in rows}
        print(f"  {name:10s} " + ", ".join(f"M={m}: {r:.2f}x" for m, r in by_m.items()))


if __name__ == "__main__":
    main()
