"""Stage report: the results of this run's stages (gpu_check_results.jsonl) in one JSON,
gpu_check.json, and a table of the headline figures against the issue's goals."""

from __future__ import annotations

import json
import math

from gpu_stages.context import Context, say

# (what, goal text, test on the value): the goals a GPU run is reported against.
GOALS = {
    "chunk_graph_ms": ("full-size chunk, Triton + CUDA graph (GPU time)", "<= 10 ms", lambda v: v <= 10),
    "ratio_m626": ("W2A8 vs cuBLAS bf16, M=626 (geomean over shapes)", ">= 1.5x", lambda v: v >= 1.5),
    "ratio_m1": ("W2A8 vs cuBLAS bf16, M=1 (geomean over shapes)", ">= 3x", lambda v: v >= 3),
    "peak_gib": ("GPU memory peak, Triton backend (torch allocated)", "<= 1.5 GB", lambda v: v * 2**30 <= 1.5e9),
}


def _load(ctx: Context) -> list[dict]:
    if not ctx.results.is_file():
        return []
    return [json.loads(line) for line in ctx.results.read_text().splitlines() if line.strip()]


def gather(rows: list[dict]) -> dict:
    by_stage: dict[str, list[dict]] = {}
    for r in rows:
        by_stage.setdefault(r.get("stage", "?"), []).append(r)
    model = {r["backend"]: r for r in by_stage.get("model", []) if "eager_ms" in r}
    exact = {r["backend"]: r.get("bitwise") for r in by_stage.get("model", []) if "bitwise" in r}
    geo = next((r for r in by_stage.get("kernels", []) if r.get("summary") == "ratio_geomean_by_m"), {})
    nodes = [r for r in by_stage.get("node", []) if "e2e_p50_ms" in r]
    env = (by_stage.get("env") or [{}])[-1]
    cuda = model.get("cuda", {})
    headline = {"chunk_graph_ms": cuda.get("graph_ms"), "chunk_eager_ms": cuda.get("eager_ms"),
                "ratio_m626": geo.get("m626"), "ratio_m1": geo.get("m1"),
                "peak_gib": cuda["peak_allocated_bytes"] / 2**30 if "peak_allocated_bytes" in cuda else None}
    return {"env": env, "headline": headline, "model": model, "model_vs_reference_bitwise": exact,
            "kernels": [r for r in by_stage.get("kernels", []) if "bf16_us" in r], "kernel_ratio_geomean": geo,
            "node": nodes, "correct_failures": sum(1 for r in by_stage.get("correct", []) if r.get("ok") is False),
            "stages_seen": sorted(by_stage)}


def _fmt(v, unit="") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def table(summary: dict, dry_run: bool) -> list[str]:
    lines = [f"{'figure':56s} {'value':>12s}  {'goal':>9s}  met"]
    h = summary["headline"]
    for key, (what, goal, ok) in GOALS.items():
        v = h.get(key)
        lines.append(f"{what:56s} {_fmt(v):>12s}  {goal:>9s}  {'-' if v is None else ('yes' if ok(v) else 'NO')}")
    for backend, r in summary["model"].items():
        lines.append(f"{r.get('preset', '') + ' chunk, ' + backend + ' eager / graph (ms)':56s} "
                     f"{_fmt(r.get('eager_ms')) + ' / ' + _fmt(r.get('graph_ms')):>12s}")
        if "peak_allocated_bytes" in r:
            lines.append(f"{'  peak GPU memory, ' + backend + ' (GiB allocated)':56s} "
                         f"{_fmt(r['peak_allocated_bytes'] / 2**30):>12s}")
    for backend, bitwise in summary["model_vs_reference_bitwise"].items():
        lines.append(f"{'model output == reference, ' + backend:56s} {str(bitwise):>12s}")
    for r in summary["node"]:
        tag = f"policy_node {r.get('backend')}/{r.get('device')}/{r.get('forward')}"
        lines.append(f"{tag + ' e2e p50 / p95 (ms)':56s} {_fmt(r['e2e_p50_ms']) + ' / ' + _fmt(r['e2e_p95_ms']):>12s}")
        lines.append(f"{'  inference p50 / p95 (ms)':56s} "
                     f"{_fmt(r.get('inference_p50_ms')) + ' / ' + _fmt(r.get('inference_p95_ms')):>12s}")
        lines.append(f"{'  first chunk e2e (ms; includes a capture for a new length)':56s} "
                     f"{_fmt(r.get('first_chunk_e2e_ms')):>12s}")
        lines.append(f"{'  host RSS peak / GPU memory nvidia-smi (MB)':56s} "
                     f"{_fmt(r.get('host_rss_peak_mb')) + ' / ' + _fmt(r.get('gpu_memory_peak_mb_nvidia_smi')):>12s}")
    lines.append(f"{'kernel correctness failures':56s} {summary['correct_failures']:>12d}")
    if dry_run:
        lines.append("(dry run on the CPU with the Triton interpreter and the tiny model: the timings mean nothing)")
    return lines


def run(ctx: Context, dry_run: bool = False) -> int:
    summary = gather(_load(ctx))
    summary["dry_run"] = dry_run
    out = ctx.out_dir / "gpu_check.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say("\n".join(table(summary, dry_run)))
    say(f"\nall figures: {out}")
    return 0
