"""Resident memory of the full-size BitVLA in deploy form, against its bf16 master weights.

Two ways to hold the model, each measured in a fresh process:
  in-memory  the deploy-form model built directly in anonymous memory (random packed codes);
  mmap       the same model saved as a packed folder and loaded with `load_packed`, which maps
             the file: pages are read when first touched (only prompt rows of the embedding).
Reports RSS after import, after load, after one forward pass (with --backend's kernels; `auto`
times the candidates first, or reads this machine's cache), and the peak.

    .venv/bin/python bench/memory.py [--no-forward] [--keep DIR] [--backend auto|cpu|reference|...]
                                     [--heads float|int8]

--heads int8 stores the projectors and the action head as int8 rows (`bitvla convert --heads int8`);
bench/int8_heads.py measures what that does to a trained model's actions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def deploy_model(heads: str):
    from common import random_deploy_model

    from bitvla_ros.model.config import bitvla_3b

    model = random_deploy_model(bitvla_3b())
    return model.compact_heads() if heads == "int8" else model


def child(mode: str, folder: str, forward: bool, backend: str, heads: str) -> dict:
    import torch

    from common import dummy_inputs, mapped_rss_mb, peak_rss_mb, rss_mb, rss_split_mb

    from bitvla_ros.model.checkpoint import load_packed, save_packed

    torch.set_grad_enabled(False)
    out = {"import": rss_mb()}
    out["anon_import"], _ = rss_split_mb()
    start = time.perf_counter()
    if mode == "write":
        save_packed(deploy_model(heads), folder)
        return {"write_s": time.perf_counter() - start}
    model = deploy_model(heads) if mode == "in-memory" else load_packed(folder, backend="reference")
    model.set_backend(backend)
    out["backend"] = model.backend_name
    out.update(load=rss_mb(), load_s=time.perf_counter() - start)
    if forward:
        batch = dummy_inputs(model.config)
        start = time.perf_counter()
        actions = model(**batch)
        held = rss_mb(trim=False)  # before the trim: what a policy holds with BITVLA_CPU_HEAP=keep
        out.update(forward_held=held, forward=rss_mb(), forward_s=time.perf_counter() - start, finite=bool(torch.isfinite(actions).all()),
                   tokens=batch["input_ids"].shape[1])
    out["anon"], out["file"] = rss_split_mb()
    out["mapped_model"] = mapped_rss_mb(Path(folder) / "model.safetensors") if mode == "mmap" else 0.0
    out["peak"] = peak_rss_mb()
    return out


def run_child(*args: str) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=HERE)
    if res.returncode:
        raise SystemExit(f"child {args} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--backend", default="auto", help="kernel backend for the forward (default: auto)")
    p.add_argument("--no-forward", action="store_true", help="measure after load only (fast)")
    p.add_argument("--keep", help="write the packed folder here and keep it (default: a temp dir)")
    p.add_argument("--heads", default="float", choices=["float", "int8"],
                   help="storage of the projectors and action head (default float = bf16)")
    args = p.parse_args()
    if args.child:
        mode, folder, forward, backend, heads = args.child
        print(json.dumps(child(mode, folder, forward == "1", backend, heads)))
        return

    sys.path.insert(0, str(HERE))
    import torch

    from bitvla_ros.kernels.autotune import cpu_model, isa_flags
    from bitvla_ros.model.config import bitvla_3b
    from bitvla_ros.model.inventory import inventory

    sizes = inventory(bitvla_3b(), heads=args.heads)
    master = sum(s.bf16_bytes for s in sizes.values()) / 1e6
    packed = sum(s.packed_bytes for s in sizes.values()) / 1e6
    print(f"BitVLA-3B: bf16 master weights {master:,.0f} MB; packed deploy form {packed:,.0f} MB "
          f"({master / packed:.2f}x smaller; heads {args.heads})")
    print(f"CPU: {cpu_model()} ({', '.join(isa_flags()) or 'no SIMD flags read'}), {torch.get_num_threads()} threads")
    forward = "0" if args.no_forward else "1"
    with tempfile.TemporaryDirectory(prefix="bitvla-mem-") as tmp:
        folder = args.keep or str(Path(tmp) / "packed")
        results = {"in-memory": run_child("in-memory", folder, forward, args.backend, args.heads)}
        written = run_child("write", folder, "0", args.backend, args.heads)
        print(f"(wrote the packed folder in {written['write_s']:.0f} s: "
              f"{sum(f.stat().st_size for f in Path(folder).iterdir()) / 1e6:,.0f} MB)")
        results["mmap"] = run_child("mmap", folder, forward, args.backend, args.heads)
    print()
    print(f"{'mode':10s} {'import':>8s} {'loaded':>8s} {'model':>8s} {'forward':>8s} {'peak':>8s} "
          f"{'vs bf16':>8s}  (MB resident)")
    for mode, r in results.items():
        model_mb = r["load"] - r["import"]
        after = r.get("forward", r["load"])
        print(f"{mode:10s} {r['import']:8.0f} {r['load']:8.0f} {model_mb:8.0f} {after:8.0f} {r['peak']:8.0f} "
              f"{master / after:7.2f}x")
        print(f"{'':10s} at the end: {r['anon']:.0f} MB anonymous (interpreter, torch, heap) + "
              f"{r['file']:.0f} MB file-backed (mapped model pages, shared libraries)")
        attributable = r["mapped_model"] + r["anon"] - r["anon_import"]
        if mode == "mmap":
            print(f"{'':10s} model-attributable: {r['mapped_model']:.0f} MB of model.safetensors resident + "
                  f"{r['anon'] - r['anon_import']:.0f} MB heap added since import = {attributable:.0f} MB")
        if "forward_held" in r:
            print(f"{'':10s} before trimming: {r['forward_held']:.0f} MB (the freed heap kept for the next forward, "
                  f"as a policy holds it between chunks with BITVLA_CPU_HEAP=keep; by default the predictor "
                  f"trims after each chunk)")
        if "forward_s" in r:
            print(f"{'':10s} load {r['load_s']:.1f} s, one forward over {r['tokens']} tokens {r['forward_s']:.1f} s "
                  f"({r['backend']} kernels), finite={r['finite']}")
    print("\nresident = whole-process RSS (Python, torch and the model) after freed heap is returned to the "
          "OS (malloc_trim, as the predictor does after each chunk); 'model' = RSS added by loading; 'peak' = VmHWM, before any trim; "
          "'vs bf16' = bf16 master weight bytes / resident after the forward.")


if __name__ == "__main__":
    main()
