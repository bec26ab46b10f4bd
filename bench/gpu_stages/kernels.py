"""Stage kernels: Triton W2A8 (quantize + GEMM, and each alone) and the int8 fallback against
cuBLAS bf16 ``F.linear`` on the same ternary matrix (dense, scaled), at BitVLA's (N, K) and
M ∈ {1, 8, 64, 626}. Medians of CUDA-event timings with the L2 flushed before each call (cold
weights, as in one forward pass); ratio = bf16 time / other time (> 1: faster than bf16)."""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from common import median, time_calls
from gpu_stages.context import Context, cfg_str, l2_flush, say, triton_kernels


def run(ctx: Context) -> int:
    from bitvla_ros.kernels import Int8Backend
    from bitvla_ros.quant import unpack_ternary

    tw = triton_kernels()
    reps, flush = ctx.repeats(30), l2_flush(ctx)
    us = lambda fn: median(time_calls(fn, reps, warmup=3 if ctx.gpu else 1, device=ctx.device, before=flush)) * 1e6  # noqa: E731
    int8_here = Int8Backend.available_on(ctx.device.type)
    say(__doc__.split("\n\n")[0].replace("\n", " "))
    say(f"{'N x K':>11s} {'M':>4s} {'bf16':>8s} {'W2A8':>8s} {'ratio':>6s} {'quant':>7s} {'gemm':>8s} "
        f"{'int8':>8s} {'ratio':>6s} {'gemm TOPS':>9s}  config")
    ratios: dict[int, list[float]] = {}
    for i, (n, k) in enumerate(ctx.shapes):
        w = ctx.random_packed(n, k, seed=i)
        w16 = unpack_ternary(w.codes, k, torch.bfloat16) * 0.02
        w8 = Int8Backend.prepare(w) if int8_here else None
        for m in ctx.rows:
            x = ctx.random_x(m, k, seed=m)
            cfg = tw.pick_config(m, n, k, ctx.device)
            try:
                t_bf16 = us(lambda: F.linear(x, w16))
                t_w2a8 = us(lambda: tw.w2a8_matmul(x, w.codes, w.scale, k))
                t_quant = us(lambda: tw.act_quant(x))
                xq, xs = tw.act_quant(x)
                t_gemm = us(lambda: tw.w2a8_gemm(xq, xs, w.codes, w.scale.reshape(1), k))
                t_int8 = us(lambda: Int8Backend.matmul(x, w8)) if w8 is not None else float("nan")
            except Exception as e:  # noqa: BLE001
                say(f"{n:5d}x{k:<5d} {m:4d} ERROR {type(e).__name__}: {str(e)[:300]}")
                ctx.record(n=n, k=k, m=m, error=str(e))
                continue
            ratio, ratio8 = t_bf16 / t_w2a8, t_bf16 / t_int8
            ratios.setdefault(m, []).append(ratio)
            say(f"{n:5d}x{k:<5d} {m:4d} {t_bf16:8.1f} {t_w2a8:8.1f} {ratio:6.2f} {t_quant:7.1f} {t_gemm:8.1f} "
                f"{t_int8:8.1f} {ratio8:6.2f} {2.0 * m * n * k / t_gemm / 1e6:9.1f}  {cfg_str(cfg)}")
            ctx.record(n=n, k=k, m=m, bf16_us=t_bf16, w2a8_us=t_w2a8, quant_us=t_quant, gemm_us=t_gemm,
                       int8_us=t_int8, ratio=ratio, int8_ratio=ratio8, config=cfg_str(cfg))
        w16 = w8 = None  # free the dense and int8 copies before the next shape
    geo = {m: statistics.geometric_mean(r) for m, r in ratios.items()}
    say("\ngeometric-mean ratio bf16/W2A8 by M: " + ", ".join(f"M={m}: {g:.2f}" for m, g in geo.items()))
    ctx.record(summary="ratio_geomean_by_m", **{f"m{m}": g for m, g in geo.items()})
    return 0
