"""Stage sweep: alternative Triton W2A8 configurations per shape against pick_config's choice
(GEMM alone, pre-quantized input, L2 flushed), each checked exact; for retuning the heuristics."""

from __future__ import annotations

import torch

from common import median, time_calls
from gpu_stages.context import Context, cfg_str, l2_flush, say, triton_kernels


def candidates(ctx: Context, m: int, n: int, k: int) -> list:
    tw = triton_kernels()
    C = tw.W2A8Config
    base = tw.pick_config(m, n, k, ctx.device)
    if not ctx.gpu:
        return [base, C("dot", 16, 16, 64, 2, 2, 4, 2), C("dot_swap", 16, 32, 64, 1, 1, 4, 2)]
    sms2 = 2 * tw.num_sms(ctx.device)
    split = lambda bn, bk: tw._split_for(tw.triton.cdiv(n, bn), k, bk, sms2)  # noqa: E731
    split_d = tw.pick_config(m, n, k, ctx.device, "dot").split_k
    if m <= 4:
        out = [base]
        for bn, bk in ((32, 256), (64, 128), (128, 128), (32, 512)):
            bm = min(tw._next_pow2(m), 4)
            out += [C("gemv", bm, bn, bk, 1, 1, 4, 2), C("gemv", bm, bn, bk, split(bn, bk), 1, 4, 2)]
        return out + [C("dot_swap", 16, bn, 128, split(bn, 128), 1, 4, 4) for bn in (64, 128)]
    if m <= 16:
        return ([base, C("gemv", 4, 16, 256, base.split_k, 1, 4, 2)]
                + [C("dot_swap", 16, bn, bk, split(bn, bk), 1, 4, st) for bn, bk, st in ((64, 256, 3), (128, 128, 4),
                                                                                          (32, 128, 4))]
                + [C("dot", 16, 64, 128, base.split_k, 1, 4, 4)])
    if m <= 64:
        return [base, C("dot", 64, 64, 128, split_d, 8, 4, 4), C("dot", 64, 128, 128, split_d, 8, 4, 3),
                C("dot", 64, 64, 256, split_d, 8, 4, 3), C("dot_swap", 64, 64, 128, split_d, 8, 4, 3),
                C("dot", 64, 256, 128, 1, 8, 8, 3)]
    return [base, C("dot", 128, 128, 128, 1, 8, 8, 3), C("dot", 128, 128, 64, 1, 8, 8, 4),
            C("dot", 128, 256, 128, 1, 8, 8, 3), C("dot", 256, 128, 128, 1, 8, 8, 3),
            C("dot", 128, 64, 128, 1, 8, 4, 4), C("dot", 64, 128, 128, 1, 8, 4, 4),
            C("dot_swap", 128, 128, 128, 1, 8, 8, 3)]


def run(ctx: Context) -> int:
    from bitvla_ros.kernels.reference import ternary_matmul_reference

    tw = triton_kernels()
    reps, flush = max(5, ctx.repeats(10)), l2_flush(ctx)
    say("gemm-only µs (pre-quantized input), L2 flushed; * = pick_config's choice; each config checked exact")
    for i, (n, k) in enumerate(ctx.shapes):
        w = ctx.random_packed(n, k, seed=i)
        for m in ctx.rows:
            x = ctx.random_x(m, k, seed=m)
            xq, xs = tw.act_quant(x)
            ref = ternary_matmul_reference(x, w)
            results = []
            for j, cfg in enumerate(candidates(ctx, m, n, k)):
                try:
                    cfg = cfg.validate()
                    gemm = lambda: tw.w2a8_gemm(xq, xs, w.codes, w.scale.reshape(1), k, cfg)  # noqa: E731
                    exact = torch.equal(gemm(), ref)
                    t = median(time_calls(gemm, reps, warmup=2 if ctx.gpu else 0, device=ctx.device, before=flush)) * 1e6
                    results.append((t, j, cfg, exact))
                except Exception as e:  # noqa: BLE001
                    say(f"  {n}x{k} M={m} {cfg_str(cfg)}: ERROR {type(e).__name__}: {str(e)[:200]}")
            if not results:
                continue
            base_t = next((t for t, j, _, _ in results if j == 0), float("nan"))
            best = min(results, key=lambda r: r[0])
            say(f"{n:5d}x{k:<5d} M={m:4d}: heuristic {base_t:8.1f}  best {best[0]:8.1f} ({cfg_str(best[2])})"
                + ("" if all(r[3] for r in results) else "  NOT EXACT: " + ", ".join(cfg_str(r[2]) for r in results
                                                                                      if not r[3])))
            for t, j, cfg, exact in sorted(results, key=lambda r: r[0]):
                say(f"      {'*' if j == 0 else ' '} {t:8.1f}  {cfg_str(cfg)}{'' if exact else '  NOT EXACT'}")
            ctx.record(n=n, k=k, m=m, heuristic_us=base_t, best_us=best[0], best=cfg_str(best[2]),
                       all=[(t, cfg_str(c), e) for t, _, c, e in results])
    return 0
