"""Stage correct: the W2A8 kernels (every kind) and the int8 fallback vs the reference, bit for
bit, at the model's (N, K) shapes."""

from __future__ import annotations

import torch

from gpu_stages.context import Context, cfg_str, say, triton_kernels


def _tie_row(ctx: Context) -> torch.Tensor:
    """max|x| = 1 (scale exactly 127) and entries landing exactly on halves after x · 127."""
    vals = [1.0]
    for t2 in range(-253, 254, 2):
        x_t = torch.tensor((t2 / 2) / 127, dtype=torch.float32)
        if float(x_t * torch.tensor(127.0)) == t2 / 2:
            vals.append(float(x_t))
    return torch.tensor(vals).unsqueeze(0).to(ctx.device)


def run(ctx: Context) -> int:
    from bitvla_ros.kernels import Int8Backend
    from bitvla_ros.kernels.reference import ternary_matmul_reference
    from bitvla_ros.quant import quantize_activations_int8

    tw = triton_kernels()
    failures = 0
    for k in sorted({k for _, k in ctx.shapes}):
        x = ctx.random_x(7, k, k, torch.float32)
        x[1] = 0
        x[2, k // 3] = 3e4
        for dtype in (torch.float32, torch.bfloat16):
            q, s = tw.act_quant(x.to(dtype))
            rq, rs = quantize_activations_int8(x.to(dtype))
            ok = torch.equal(q, rq) and torch.equal(s, rs.reshape(-1))
            failures += not ok
            say(f"act_quant K={k:5d} {str(dtype)[6:]:8s}: {'exact' if ok else 'MISMATCH'}")
    row = _tie_row(ctx)
    ok = torch.equal(tw.act_quant(row)[0], quantize_activations_int8(row)[0])
    failures += not ok
    say(f"act_quant .5 ties ({row.shape[1] - 1} of them): {'exact' if ok else 'MISMATCH'}")

    int8_here = Int8Backend.available_on(ctx.device.type)
    say(f"\n{'N x K':>11s} {'M':>4s}  kind     config                                   result")
    for i, (n, k) in enumerate(ctx.shapes):
        w = ctx.random_packed(n, k, seed=i)
        int8_w = Int8Backend.prepare(w) if int8_here else None
        for m in ctx.rows:
            x = ctx.random_x(m, k, seed=1000 * i + m)
            if m > 1:
                x[0, 0] = 5e3
            ref = ternary_matmul_reference(x, w)
            for kind in [None] + [kd for kd in tw.KINDS if not (kd == "gemv" and m > 16)]:
                cfg = tw.pick_config(m, n, k, ctx.device, kind)
                try:
                    y = tw.w2a8_matmul(x, w.codes, w.scale, k, config=cfg)
                    ok = torch.equal(y, ref)
                    res = "exact" if ok else f"MISMATCH max|diff| {(y - ref).abs().max().item():.3g}"
                except Exception as e:  # noqa: BLE001
                    ok, res = False, f"ERROR {type(e).__name__}: {str(e)[:200]}"
                failures += not ok
                say(f"{n:5d}x{k:<5d} {m:4d}  {kind or 'auto':8s} {cfg_str(cfg):40s} {res}")
                ctx.record(n=n, k=k, m=m, kind=kind or "auto", config=cfg_str(cfg), ok=ok, result=res)
            if int8_w is not None:
                ok = torch.equal(Int8Backend.matmul(x, int8_w), ref)
                failures += not ok
                say(f"{n:5d}x{k:<5d} {m:4d}  int8     {'bitsandbytes' if ctx.gpu else 'torch._int_mm':40s} "
                    f"{'exact' if ok else 'MISMATCH'}")
                ctx.record(n=n, k=k, m=m, kind="int8", ok=ok)
    say(f"\ncorrectness: {'ALL EXACT' if not failures else f'{failures} FAILURES'}")
    return 1 if failures else 0
