"""Seconds per action chunk for the one-pass forward, per kernel backend.

Builds the model directly in deploy form with random packed weights (no float ternary copy) and
times the whole forward — two 224 px images through the vision tower, ~600 tokens through the
LLM, the action head — plus its stages, as medians. "cpu-seconds" is the process's CPU time per
chunk (all threads): on a shared machine, where wall time includes waiting for a core, it is
the steadier figure to compare (wall ≈ cpu-seconds / threads when the cores are free).

    .venv/bin/python bench/model.py [--preset bitvla-3b] [--backends auto,reference,...] [--repeats 3]
                                    [--float-ops measured|torch|both]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import dummy_inputs, median, random_deploy_model, threads

from bitvla_ros.kernels import available_backends
from bitvla_ros.model.config import preset


def stage_times(model, batch) -> dict[str, float]:
    """One forward split into vision (+projector, embedding), LLM and read-out/head: the model's
    own pieces of BitVLA.forward, timed one after the other."""
    t0 = time.perf_counter()
    pos = model.token_positions(**batch)
    embeds = model.embed_at(pos["input_ids"], pos["pixel_values"], pos["image_pos"], pos.get("proprio"),
                            pos.get("proprio_pos"))
    t1 = time.perf_counter()
    hidden = model.llm(embeds, pos["attention_mask"])
    t2 = time.perf_counter()
    model.read_out(hidden, pos["read_pos"])
    t3 = time.perf_counter()
    return {"vision+embed": t1 - t0, "llm": t2 - t1, "head": t3 - t2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="bitvla-3b")
    p.add_argument("--backends", default=",".join(["auto"] + available_backends()),
                   help="'auto' times the candidates on the model's shapes (or reads this machine's cache)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--float-ops", default="measured", choices=["measured", "torch", "both"],
                   help="attention and RMSNorm/GLU around the matmuls: as measured for this machine (default), "
                        "torch's SDPA and ops, or each backend both ways (label '/torch-ops')")
    args = p.parse_args()

    torch.set_grad_enabled(False)
    config = preset(args.preset)
    start = time.perf_counter()
    model = random_deploy_model(config)
    batch = dummy_inputs(config)
    print(f"{args.preset}: built in deploy form in {time.perf_counter() - start:.1f} s; "
          f"{batch['input_ids'].shape[1]} tokens, {config.num_images} images; {threads()}")
    rows = []
    modes = {"measured": ["measured"], "torch": ["torch"], "both": ["measured", "torch"]}[args.float_ops]
    for backend, ops in ((b, o) for b in args.backends.split(",") for o in modes):
        start = time.perf_counter()
        model.set_backend(backend)
        if model.kernel_tuning is not None and ops == modes[0]:
            print(f"{model.kernel_tuning.describe()}; {time.perf_counter() - start:.1f} s")
        for tuning in (model.attention_tuning, model.elementwise_tuning):
            if tuning is not None and ops == modes[0] and backend == args.backends.split(",")[0]:
                print(f"{tuning.workload.split()[0]}: {tuning.describe()}")
        if ops == "torch":
            model.set_attention("sdpa")
            model.set_elementwise("torch")
        label = backend + ("/torch-ops" if args.float_ops == "both" and ops == "torch" else "")
        model(**batch)  # warm-up (and any one-time weight preparation)
        totals, stages, cpu = [], [], []
        for _ in range(args.repeats):
            c0 = time.process_time()
            s = stage_times(model, batch)
            cpu.append(time.process_time() - c0)
            stages.append(s)
            totals.append(sum(s.values()))
        rows.append((label, median(totals), {k: median([s[k] for s in stages]) for k in stages[0]}
                     | {"cpu-seconds": median(cpu)}))
    print(f"\n{'backend':18s} {'s/chunk':>9s}   stages (median s)")
    base = rows[0][1]
    for backend, total, st in rows:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in st.items())
        print(f"{backend:18s} {total:9.2f}   {parts}   ({base / total:.2f}x vs {rows[0][0]})")
    fastest = min(rows, key=lambda r: r[1])
    print(f"fastest: {fastest[0]}; " + ", ".join(f"{b} {t / fastest[1]:.3f}x its time" for b, t, _ in rows))


if __name__ == "__main__":
    main()
