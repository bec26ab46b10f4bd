"""The stages of the one-call GPU check (bench/gpu_check.sh runs each in its own process).

    python bench/gpu_check.py STAGE [--device cuda|cpu] [--dry-run] [--preset P] [--reps N]

  env      versions, the device, what `device: auto` and each backend choose here, the self-check
  correct  the W2A8 kernels and the int8 fallback vs the reference backend, bit for bit
  kernels  Triton W2A8 and the int8 fallback vs cuBLAS bf16 F.linear at BitVLA's shapes
  model    the full-size model per chunk: Triton, int8 and dense bf16, eager and CUDA graph,
           peak GPU memory, outputs vs the reference
  node     policy_node over DDS on the full-size model (random packed weights): latency end to end
           and inference alone, p50/p95, host RSS peak, GPU memory
  sweep    alternative kernel configurations per shape, to retune pick_config's heuristics
  report   this run's results in one JSON (gpu_check.json) and a table against the goals

Each stage lives in bench/gpu_stages/. ``--device cpu`` (implied by ``--dry-run``) runs every
stage at tiny sizes on the CPU with the Triton interpreter, to check the script without a GPU;
its timings mean nothing. Results are appended as JSON lines to $OUT/gpu_check_results.jsonl
(or ./gpu_check_out/).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGES = ("env", "correct", "kernels", "model", "node", "sweep", "report")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", choices=STAGES, help="omitted (as `make bench` runs it): say how to run it")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU through the Triton interpreter")
    p.add_argument("--preset", default=None, help="model preset (default bitvla-3b; tiny on the CPU)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default per stage on a GPU, 1 on the CPU)")
    p.add_argument("--seconds", type=float, default=None, help="node stage: seconds per policy_node run")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu_check_out"))
    args = p.parse_args(argv)
    if args.dry_run:
        args.device = "cpu"
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.stage is None:
        print("bench/gpu_check.py runs one stage of the GPU check: `bash bench/gpu_check.sh` runs them all "
              "(`--dry-run` on a CPU); see --help")
        return 0
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
    for path in (str(REPO), str(HERE)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import torch

    from gpu_stages.context import Context, say

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        say("no CUDA device visible to torch: nothing to do here on cuda (use --dry-run on a CPU)")
        return 2
    ctx = Context(args.stage, device, Path(args.out), reps=args.reps, preset=args.preset)
    say(f"[gpu_check {args.stage}] device={device} results -> {ctx.results}")
    stage = importlib.import_module(f"gpu_stages.{args.stage}")
    extra = {"dry_run": args.dry_run} if args.stage == "report" else {}
    if args.stage == "node" and args.seconds:
        extra = {"seconds": args.seconds}
    t0 = time.perf_counter()
    try:
        rc = stage.run(ctx, **extra)
    except Exception as e:  # noqa: BLE001 - a stage failure is reported, the next stage still runs
        say(f"stage {args.stage} FAILED: {type(e).__name__}: {e}")
        traceback.print_exc()
        rc = 1
    say(f"[gpu_check {args.stage}] done in {time.perf_counter() - t0:.1f} s, rc={rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
