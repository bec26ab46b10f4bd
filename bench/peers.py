"""Our forward against transformers' BitNet at the same LLM shapes, in one run on one machine.

Each contender runs in a subprocess of its own, one after the other, so that its peak RSS is its
own and two multi-GB models never sit in memory together:
  ours        the full-size BitVLA in deploy form (random packed weights, written to a packed
              folder by a child of its own and memory-mapped from it, as a deployment loads
              it), backend `auto` (or --backend): the whole forward (vision + LLM + head) and
              its LLM part;
  hf-bf16     transformers' BitNetModel with plain bf16 nn.Linear layers (a dense model holding
              7x our weight bytes), one pass of the same number of tokens;
  hf-ternary  the same with its online ternary quantization (AutoBitLinear, quantization_mode
              "online": weights ternarized and activations int8-fake-quantized every call, with
              torch.compile'd quantizers; the BitVLA reference's approach). Its first call compiles.
Prints medians (after a warm-up call, which is reported as "first call") of wall seconds and of
process CPU seconds (the steadier figure on a shared machine; --threads 1 makes it the plain
single-core time), peak RSS per process, ratios against our LLM part, and the CPU model /
instruction sets / threads.

    .venv/bin/python bench/peers.py [--peers ours,hf-bf16,hf-ternary] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import dummy_inputs, median, peak_rss_mb, random_deploy_model

from bitvla_ros.kernels import autotune
from bitvla_ros.model.config import preset

PEERS = ("ours", "hf-bf16", "hf-ternary")


def _timed(fn, repeats: int) -> tuple[float, list[float], list[float]]:
    """First-call wall seconds, then per repeat wall seconds and process CPU seconds (all threads;
    on a shared machine the steadier of the two)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times, cpu = [], []
    for _ in range(repeats):
        start, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - c0)
    return first, times, cpu


def write_ours(args) -> dict:
    from bitvla_ros.model.checkpoint import save_packed

    save_packed(random_deploy_model(preset(args.preset)), args.folder)
    return {}


def run_ours(args) -> dict:
    from model import stage_times

    from bitvla_ros.model.checkpoint import load_packed

    config = preset(args.preset)
    model = load_packed(args.folder, backend="reference")
    batch = dummy_inputs(config)
    model.set_backend(args.backend)
    picked = model.kernel_tuning.describe() if model.kernel_tuning is not None else model.backend_name
    stages = []
    first, _, _ = _timed(lambda: stages.append(stage_times(model, batch)), args.repeats)
    stages = stages[1:]
    embeds, _ = model.embed_inputs(batch["input_ids"], batch["pixel_values"], batch.get("proprio"))
    _, _, llm_cpu = _timed(lambda: model.llm(embeds, batch["attention_mask"]), args.repeats)
    return {"tokens": batch["input_ids"].shape[1], "first_s": first,
            "forward_s": median([sum(s.values()) for s in stages]), "llm_s": median([s["llm"] for s in stages]),
            "llm_cpu_s": median(llm_cpu), "backend": picked}


def _hf_model(args, ternary: bool):
    from transformers import BitNetConfig, BitNetModel

    t = preset(args.preset).text
    cfg = BitNetConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                       num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                       num_key_value_heads=t.num_key_value_heads, rope_theta=t.rope_theta,
                       rms_norm_eps=t.rms_norm_eps, max_position_embeddings=t.max_position_embeddings,
                       hidden_act="relu2", attn_implementation="sdpa")
    with torch.device("meta"):
        model = BitNetModel(cfg).to(torch.bfloat16)
    if ternary:
        from transformers import BitNetQuantConfig
        from transformers.integrations.bitnet import replace_with_bitnet_linear

        replace_with_bitnet_linear(model, quantization_config=BitNetQuantConfig(
            linear_class="autobitlinear", quantization_mode="online"))
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # cheap random weights: the values do not change the time
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else (torch.rand(p.shape, generator=gen) - 0.5) * 0.04)
        for name, b in model.named_buffers():
            if "inv_freq" in name:  # to_empty left the rotary table uninitialised
                b.copy_(1.0 / (t.rope_theta ** (torch.arange(0, t.head_dim, 2, dtype=torch.float32) / t.head_dim)))
    return model.eval(), t


def run_hf(args, ternary: bool) -> dict:
    model, t = _hf_model(args, ternary)
    tokens = dummy_inputs(preset(args.preset))["input_ids"].shape[1]
    embeds = (torch.randn(1, tokens, t.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.02).bfloat16()
    first, times, cpu = _timed(lambda: model(inputs_embeds=embeds), args.repeats)
    return {"tokens": tokens, "first_s": first, "llm_s": median(times), "llm_cpu_s": median(cpu), "forward_s": None}


def child(args) -> None:
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    if args.one == "write-ours":
        result = write_ours(args)
    else:
        result = run_ours(args) if args.one == "ours" else run_hf(args, ternary=args.one == "hf-ternary")
    result.update(peer=args.one, peak_rss_mb=peak_rss_mb())
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--preset", default="bitvla-3b")
    p.add_argument("--backend", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--one", choices=PEERS + ("write-ours",), help=argparse.SUPPRESS)  # internal: one peer here
    p.add_argument("--folder", help=argparse.SUPPRESS)  # internal: our packed folder
    args = p.parse_args()
    if args.one:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="bitvla-peers-") as tmp:
        compare(args, str(Path(tmp) / "packed"))


def compare(args, folder: str) -> None:
    print(f"{autotune.machine_id(args.threads)}; {args.preset}, repeats {args.repeats} (medians)")
    results = []
    peers = args.peers.split(",")
    for peer in (["write-ours"] if "ours" in peers else []) + peers:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", peer, "--preset", args.preset,
               "--backend", args.backend, "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--folder", folder]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{peer}: failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")
            continue
        if peer == "write-ours":
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        if r.get("backend"):
            print(f"ours: {r['backend']}")
    ours = next((r for r in results if r["peer"] == "ours"), None)
    print(f"\n{'peer':11s} {'tokens':>6s} {'LLM s':>8s} {'LLM cpu-s':>10s} {'forward s':>10s} {'first call s':>13s} "
          f"{'peak RSS MB':>12s}  LLM vs ours (wall, cpu-s)")
    for r in results:
        fwd = f"{r['forward_s']:.2f}" if r["forward_s"] is not None else "-"
        ratio = f"{r['llm_s'] / ours['llm_s']:.2f}x, {r['llm_cpu_s'] / ours['llm_cpu_s']:.2f}x" if ours else "-"
        print(f"{r['peer']:11s} {r['tokens']:6d} {r['llm_s']:8.2f} {r['llm_cpu_s']:10.2f} {fwd:>10s} "
              f"{r['first_s']:13.2f} {r['peak_rss_mb']:12.0f}  {ratio}")


if __name__ == "__main__":
    main()
