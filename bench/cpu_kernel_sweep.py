"""The `cpu` ternary kernel against dense torch and the reference backend, at BitVLA's shapes.

For each (N, K) weight shape (BitNet-2B q/o, k/v, gate/up, down; SigLIP q/k/v/out, fc1, fc2) and
M rows: median milliseconds of fp32 `F.linear`, bf16 `F.linear`, the reference backend and the
cpu backend (its automatic schedule, or both schedules with --schedules), and fp32 / cpu.
Everything runs in one process, interleaved, so the numbers compare within a row. On a shared
machine, wall-clock medians with several threads catch the scheduler (a parallel region waits
for its slowest thread: steps of 4-16 ms when another process holds a core); `--threads 1
--timer thread` counts only this thread's CPU time, which is stable there, and `--stat min` keeps
the undisturbed calls.

    .venv/bin/python bench/cpu_kernel_sweep.py [--rows 1,8,64,626] [--repeats 15] [--threads N]
        [--timer wall|thread] [--stat median|min] [--shapes 2560x2560,...]
        [--schedules auto|registers,predecode] [--no-reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitvla_ros.kernels import cpu  # noqa: E402
from bitvla_ros.kernels.constants import REAL_SHAPES as SHAPES  # noqa: E402
from bitvla_ros.kernels.reference import ternary_matmul_reference  # noqa: E402
from bitvla_ros.quant import PackedTernary, pack_ternary  # noqa: E402


def time_ms(fn, repeats: int, clock=time.perf_counter, stat=statistics.median) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return stat(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,8,64,626")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--timer", choices=["wall", "thread"], default="wall",
                   help="wall clock, or this thread's CPU time (needs --threads 1)")
    p.add_argument("--stat", choices=["median", "min"], default="median")
    p.add_argument("--shapes", default="", help="N×K list like 2560x2560,640x2560 (default: all)")
    p.add_argument("--schedules", default="auto", help="comma list of auto, registers, predecode")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference backend")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.timer == "thread" and torch.get_num_threads() != 1:
        sys.exit("--timer thread measures one thread: add --threads 1")
    clock = time.thread_time if args.timer == "thread" else time.perf_counter
    stat = min if args.stat == "min" else statistics.median
    if not cpu.CpuBackend.available():
        sys.exit(f"cpu kernel unavailable: {cpu.CpuBackend.unavailable_reason()}")
    rows = [int(m) for m in args.rows.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    schedules = args.schedules.split(",")
    print(f"cpu kernel isa={cpu.isa()}, {torch.get_num_threads()} threads, {args.timer} time; pre-decode from "
          f"M={cpu.PRE_DECODE_MIN_ROWS}; {args.stat} ms of {args.repeats} (a quarter of that at M >= 600)")
    cols = ["fp32", "bf16"] + ([] if args.no_reference else ["reference"]) + [f"cpu:{s}" for s in schedules]
    print(f"| N x K | M | " + " | ".join(cols) + " | fp32 / cpu |")
    print("|" + "---|" * (len(cols) + 3))
    gen = torch.Generator().manual_seed(0)
    for n, k in shapes:
        codes = torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)
        weight = PackedTernary(pack_ternary(codes), torch.tensor(0.02), k)
        prepared = cpu.CpuBackend.prepare(weight)
        w32 = codes.float() * 0.02
        w16 = w32.bfloat16()
        for m in rows:
            x = torch.randn(m, k, generator=gen)
            x16 = x.bfloat16()
            reps = max(3, args.repeats // (4 if m >= 600 else 1))
            ms = {
                "fp32": time_ms(lambda: F.linear(x, w32), reps, clock, stat),
                "bf16": time_ms(lambda: F.linear(x16, w16), reps, clock, stat),
            }
            if not args.no_reference:
                ms["reference"] = time_ms(lambda: ternary_matmul_reference(x, weight), reps, clock, stat)
            for s in schedules:
                ms[f"cpu:{s}"] = time_ms(lambda: cpu.ternary_matmul_cpu(x, prepared, schedule=s), reps, clock, stat)
            best = min(ms[f"cpu:{s}"] for s in schedules)
            print(f"| {n}x{k} | {m} | " + " | ".join(f"{ms[c]:.3f}" for c in cols) + f" | {ms['fp32'] / best:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
