"""Compile the Triton W2A8 kernels for NVIDIA GPUs on a machine without one.

Triton's interpreter (TRITON_INTERPRET=1) checks what the kernels compute, but not whether they
compile: it accepts things the compiler rejects (e.g. a non-constexpr global read in a kernel).
This module runs the real compiler ahead of time — Triton front end, TTGIR, LLVM, PTX, and the
ptxas that ships inside the triton wheel — for sm_80 and sm_90 targets, for every kernel variant
that ``pick_config`` chooses at BitVLA's shapes (or a few, with ``--quick``), and reports per
variant the tensor-core instruction used, registers, spills and shared memory, and checks the PTX
of the fp32 parts: IEEE divisions (``div.rn``), no fused multiply-add, ``cvt.rni`` for rounding.

    python -m bitvla_ros.kernels.triton_compile_check [--arch 90,80] [--quick]

It must run in a process where TRITON_INTERPRET is unset (it refuses otherwise).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from bitvla_ros.kernels.constants import REAL_SHAPES, interpreting

REAL_ROWS = [1, 3, 8, 16, 64, 512, 626]

_GEMM_TYPES = dict(a_ptr="*i8", xs_ptr="*fp32", w_ptr="*u8", wscale_ptr="*fp32", out_ptr="*fp32", ws_ptr="*i32",
                   M="i32", N="i32", K="i32", Kb="i32", stride_am="i32", stride_wn="i32", stride_om="i32",
                   K_PER_SPLIT="i32")
_GEMM_DIV16 = ("a_ptr", "xs_ptr", "w_ptr", "wscale_ptr", "out_ptr", "ws_ptr", "N", "K", "Kb", "stride_am",
               "stride_wn", "stride_om", "K_PER_SPLIT")
_QUANT_DIV16 = ("x_ptr", "q_ptr", "s_ptr", "K", "stride_xm", "stride_qm")
_EPI_TYPES = dict(ws_ptr="*i32", xs_ptr="*fp32", wscale_ptr="*fp32", out_ptr="*fp32", total="i32", N="i32",
                  stride_om="i32", SPLIT_K="i32")


def _variants(quick: bool):
    """(label, kernel name, arg types, constexprs, divisible-by-16 args, num_warps, num_stages, ptx checks)."""
    import torch

    from bitvla_ros.kernels import triton_w2a8 as tw

    cpu = torch.device("cpu")
    tw._num_sms.cache_clear()
    out, seen = [], set()

    def add(label, name, types, consts, div, warps, stages, checks=()):
        key = (name, tuple(sorted(consts.items())), warps, stages, tuple(sorted(types.items())))
        if key not in seen:
            seen.add(key)
            out.append((label, name, types, consts, div, warps, stages, checks))

    sms_override = 132  # pick_config as on an H100/H200
    orig = tw._num_sms
    tw._num_sms = lambda device_type, index: sms_override  # noqa: E731
    try:
        shapes = REAL_SHAPES[:2] if quick else REAL_SHAPES
        rows = [1, 8, 626] if quick else REAL_ROWS
        for n, k in shapes:
            for m in rows:
                kinds = [None] + ([] if quick else ["gemv", "dot_swap", "dot"])
                for kind in kinds:
                    if kind == "gemv" and m > 16:
                        continue
                    cfg = tw.pick_config(m, n, k, cpu, kind)
                    split = max(1, min(cfg.split_k, -(-k // cfg.block_k)))
                    partial = split > 1
                    consts = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, PARTIAL=partial)
                    if cfg.kind == "gemv":
                        name = "_w2a8_gemv_kernel"
                    else:
                        name = "_w2a8_dot_kernel"
                        consts.update(GROUP_M=cfg.group_m, SWAP_AB=cfg.kind == "dot_swap")
                    label = f"{cfg.kind} {cfg.block_m}x{cfg.block_n}x{cfg.block_k} w{cfg.num_warps} st{cfg.num_stages}" \
                            f"{' split' if partial else ''}"
                    add(label, name, _GEMM_TYPES, consts, _GEMM_DIV16, cfg.num_warps, cfg.num_stages,
                        () if partial else ("div.rn.f32",))
                    if m == 1:  # the launcher specializes an int argument equal to 1 as a constant
                        add(label + " M=1", name, _GEMM_TYPES, dict(consts, M=1), _GEMM_DIV16, cfg.num_warps,
                            cfg.num_stages, () if partial else ("div.rn.f32",))
                    if partial:
                        add("split-K epilogue", "_splitk_epilogue_kernel", _EPI_TYPES, dict(BLOCK=1024),
                            ("ws_ptr", "xs_ptr", "out_ptr"), 4, 3, ("div.rn.f32",))
        for k in sorted({k for _, k in shapes}) + ([] if quick else [20000]):
            block = tw._next_pow2(k)
            single = block <= 16384
            block = block if single else 4096
            rows_per = max(1, min(16, 4096 // block))
            warps = max(1, min(16, rows_per * block // 512))
            for dtype in (("*bf16",) if quick else ("*bf16", "*fp32")):
                for rint in ((True, False) if dtype == "*bf16" else (True,)):
                    types = dict(x_ptr=dtype, q_ptr="*i8", s_ptr="*fp32", M="i32", K="i32", stride_xm="i32",
                                 stride_qm="i32")
                    checks = ("div.rn.f32", "!fma.rn.f32") + (("cvt.rni.f32.f32",) if rint else ())
                    add(f"act_quant K={k} {dtype[1:]} {'rint' if rint else 'floor'}", "_act_quant_kernel", types,
                        dict(ROWS=rows_per, BLOCK_K=block, SINGLE_PASS=single, USE_RINT=rint), _QUANT_DIV16,
                        warps, 3, checks)
    finally:
        tw._num_sms = orig
    return out


def _ptxas_stats(ptx: str, arch: int) -> str:
    try:  # the ptxas triton itself uses for this target (its bundled one)
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(arch).path
    except Exception:  # noqa: BLE001
        try:
            from triton import knobs

            ptxas = knobs.nvidia.ptxas.path
        except Exception:  # noqa: BLE001
            return "ptxas stats n/a"
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", src, "-o", os.path.join(d, "k.o")],
                           capture_output=True, text=True)
    log = r.stderr + r.stdout
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (f"{regs.group(1) if regs else '?'} regs, "
            f"spills {spill.group(1) + '/' + spill.group(2) if spill else '?'}")


def run(archs=(90, 80), quick: bool = False, stats: bool = True) -> int:
    if interpreting():
        raise SystemExit("unset TRITON_INTERPRET: this compiles for the GPU instead of interpreting")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from bitvla_ros.kernels import triton_w2a8 as tw

    failures = 0
    print(f"triton {triton.__version__}: compiling the W2A8 kernels for sm_{', sm_'.join(map(str, archs))} "
          f"({'quick' if quick else 'all variants pick_config uses at BitVLA shapes'})", flush=True)
    for label, name, types, consts, div, warps, stages, checks in _variants(quick):
        fn = getattr(tw, name)
        sig = {a: ("constexpr" if a in consts else types[a]) for a in fn.arg_names}
        attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in div}
        for arch in archs:
            t0 = time.perf_counter()
            try:
                src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
                k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                   options={"num_warps": warps, "num_stages": stages, "enable_fp_fusion": False})
                ptx = k.asm["ptx"]
                mma = ("wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "-")
                bad = [c for c in checks if (c.startswith("!") and c[1:] in ptx) or (not c.startswith("!") and c not in ptx)]
                extra = _ptxas_stats(ptx, arch) if stats else ""
                status = "ok" if not bad else f"PTX CHECK FAILED {bad}"
                failures += bool(bad)
                print(f"  sm_{arch} {label:44s} {status:4s} mma={mma:8s} smem={k.metadata.shared:6d} {extra} "
                      f"({time.perf_counter() - t0:.1f}s)", flush=True)
            except Exception as e:  # noqa: BLE001
                failures += 1
                msg = str(e).strip().splitlines()
                print(f"  sm_{arch} {label:44s} COMPILE FAILED: {type(e).__name__}: {' | '.join(msg[:6])[:1500]}", flush=True)
    print(f"compile check: {'all compiled' if not failures else f'{failures} FAILED'}", flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="90,80", help="compute capabilities, e.g. 90,80")
    p.add_argument("--quick", action="store_true", help="a few variants only")
    p.add_argument("--no-stats", action="store_true", help="skip the ptxas register/spill report")
    a = p.parse_args(argv)
    return run(tuple(int(x) for x in a.arch.split(",")), a.quick, not a.no_stats)


if __name__ == "__main__":
    sys.exit(main())
