"""Stages of the one-call GPU check (bench/gpu_check.sh runs each in its own process).

    python bench/gpu_check.py env|correct|kernels|model|sweep [--device cuda|cpu] [--dry-run]

  env      versions, device, the cuda backend's availability and self-check
  correct  the W2A8 kernels vs the reference backend, bit for bit, at the model's (N, K) shapes
  kernels  Triton W2A8 (quantize + GEMM, and each alone) vs cuBLAS bf16 F.linear: medians of CUDA
           event timings with the L2 flushed before each call, and the ratios
  model    the full-size BitVLA (random packed codes, deploy form) per 8-action chunk with backend
           cuda, eager and replayed from a CUDA graph; peak GPU memory; cuda vs reference output;
           the same forward on dense bf16 weights (a control, like BitWAM's cached-bf16 one)
  sweep    alternative kernel configurations per shape, to retune pick_config's heuristics

``--device cpu`` (implied by ``--dry-run``) runs every stage at tiny sizes on the CPU with the
Triton interpreter, to check this script without a GPU; its timings mean nothing. Results are
printed and appended as JSON lines to $OUT/gpu_check_results.jsonl (or ./gpu_check_out/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["env", "correct", "kernels", "model", "sweep"])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU through the Triton interpreter")
    p.add_argument("--preset", default=None, help="model preset (default bitvla-3b; tiny with --device cpu)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 30 on GPU)")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu_check_out"))
    args = p.parse_args()
    if args.dry_run:
        args.device = "cpu"
    return args


ARGS = _parse()
if ARGS.device == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bitvla_ros.kernels import CudaBackend, register_backend  # noqa: E402
from bitvla_ros.kernels.constants import REAL_SHAPES  # noqa: E402
from bitvla_ros.kernels.reference import ternary_matmul_reference  # noqa: E402
from bitvla_ros.quant import PackedTernary, pack_ternary, quantize_activations_int8, unpack_ternary  # noqa: E402

GPU = ARGS.device == "cuda"
DEV = torch.device(ARGS.device)
REPS = ARGS.reps or (30 if GPU else 1)
OUT_DIR = Path(ARGS.out)
OUT_DIR.mkdir(parents=True, exist_ok=True)
RESULTS = OUT_DIR / "gpu_check_results.jsonl"

REAL_ROWS = [1, 8, 64, 626]
TINY_SHAPES = [(33, 130), (7, 257)]
TINY_ROWS = [1, 3, 17, 40]
SHAPES = REAL_SHAPES if GPU else TINY_SHAPES
ROWS = REAL_ROWS if GPU else TINY_ROWS


def record(**fields) -> None:
    fields = {"stage": ARGS.stage, "device": ARGS.device, **fields}
    with RESULTS.open("a") as f:
        f.write(json.dumps(fields, default=str) + "\n")


def say(*a) -> None:
    print(*a, flush=True)


def kernels_mod():
    from bitvla_ros.kernels import triton_w2a8

    return triton_w2a8


def random_packed(n: int, k: int, seed: int, scale: float = 0.02) -> PackedTernary:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)
    return PackedTernary(pack_ternary(codes).to(DEV), torch.tensor(scale, device=DEV), k)


def random_x(m: int, k: int, seed: int, dtype=torch.bfloat16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(m, k, generator=gen) * 2).to(DEV, dtype)


def sync() -> None:
    if GPU:
        torch.cuda.synchronize()


def allow_cuda_backend_on_cpu() -> None:
    """Dry runs: let the cuda backend take CPU tensors (its kernels run in the interpreter)."""
    if not GPU:
        CudaBackend.devices = ("cpu", "cuda")
        CudaBackend._status = (True, "forced for a CPU dry run (Triton interpreter)")


def event_ms(fn) -> float:
    """GPU milliseconds of one fn() call, between CUDA events recorded around it."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


class Timer:
    """Median milliseconds of fn(). GPU: CUDA events around each call, with the L2 flushed before
    it (a 256 MiB memset that also hides the launch latency of the call, as triton's do_bench
    does). CPU: wall clock."""

    def __init__(self, flush_l2: bool = True):
        self.flush = torch.empty(256 << 20, dtype=torch.int8, device=DEV) if (GPU and flush_l2) else None

    def __call__(self, fn, reps: int = REPS, warmup: int = 3) -> float:
        for _ in range(warmup if GPU else 1):
            fn()
        sync()
        times = []
        for _ in range(reps):
            if GPU:
                if self.flush is not None:
                    self.flush.zero_()
                times.append(event_ms(fn))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# env
# ------------------------------------------------------------------------------------------------


def stage_env() -> int:
    say(f"python {sys.version.split()[0]} at {sys.executable}")
    say(f"torch {torch.__version__} (CUDA build {torch.version.cuda}); cuda available: {torch.cuda.is_available()}")
    try:
        import triton

        say(f"triton {triton.__version__}; TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}")
    except Exception as e:  # noqa: BLE001
        say(f"triton NOT importable: {type(e).__name__}: {e}")
    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        l2 = getattr(props, "L2_cache_size", 0)
        say(f"device 0: {props.name}, capability {cap[0]}.{cap[1]}, {props.multi_processor_count} SMs, "
            f"{props.total_memory / 2**30:.1f} GiB, L2 {l2 / 2**20:.0f} MiB; {torch.cuda.device_count()} device(s)")
        info.update(gpu=props.name, capability=f"{cap[0]}.{cap[1]}", sms=props.multi_processor_count)
    ok, why = CudaBackend.status()
    say(f"cuda backend available: {ok} ({why})")
    info.update(cuda_backend=ok, cuda_backend_reason=why)
    rc = 0
    if ok and GPU:
        from bitvla_ros.kernels.triton_backend import self_check

        t0 = time.perf_counter()
        try:
            broken = self_check(torch.device("cuda", 0))
            say(f"self-check: {'all kernel kinds exact' if not broken else 'BROKEN kinds: ' + str(sorted(broken))} "
                f"({time.perf_counter() - t0:.1f} s incl. compiles)")
            info.update(self_check_broken=sorted(broken))
            rc = 1 if broken else 0
        except Exception as e:  # noqa: BLE001
            say(f"self-check FAILED: {type(e).__name__}: {e}")
            info.update(self_check_error=str(e))
            rc = 1
    record(**info)
    return rc


# ------------------------------------------------------------------------------------------------
# correct
# ------------------------------------------------------------------------------------------------


def stage_correct() -> int:
    tw = kernels_mod()
    failures = 0
    # activation quantizer: random rows, a zero row, a huge value, bf16, exact .5 ties
    for k in sorted({k for _, k in SHAPES}):
        x = random_x(7, k, k, torch.float32)
        x[1] = 0
        x[2, k // 3] = 3e4
        for dtype in (torch.float32, torch.bfloat16):
            xd = x.to(dtype)
            q, s = tw.act_quant(xd)
            rq, rs = quantize_activations_int8(xd)
            ok = torch.equal(q, rq) and torch.equal(s, rs.reshape(-1))
            failures += not ok
            say(f"act_quant K={k:5d} {str(dtype)[6:]:8s}: {'exact' if ok else 'MISMATCH'}")
    vals = [1.0]  # max|x| = 1: the scale is exactly 127, so x · 127 can land exactly on a half
    for t2 in range(-253, 254, 2):
        x_t = torch.tensor((t2 / 2) / 127, dtype=torch.float32)
        if float(x_t * torch.tensor(127.0)) == t2 / 2:
            vals.append(float(x_t))
    row = torch.tensor(vals).unsqueeze(0).to(DEV)
    q, _ = tw.act_quant(row)
    ok = torch.equal(q, quantize_activations_int8(row)[0])
    failures += not ok
    say(f"act_quant .5 ties ({row.shape[1] - 1} of them): {'exact' if ok else 'MISMATCH'}")

    say(f"\n{'N x K':>11s} {'M':>4s}  kind     config                                   result")
    for i, (n, k) in enumerate(SHAPES):
        w = random_packed(n, k, seed=i)
        for m in ROWS:
            x = random_x(m, k, seed=1000 * i + m)
            x[0, 0] = 5e3 if m > 1 else x[0, 0]
            ref = ternary_matmul_reference(x, w)
            kinds = [None] + [kd for kd in tw.KINDS if not (kd == "gemv" and m > 16)]
            for kind in kinds:
                cfg = tw.pick_config(m, n, k, DEV, kind)
                try:
                    y = tw.w2a8_matmul(x, w.codes, w.scale, k, config=cfg)
                    ok = torch.equal(y, ref)
                    res = "exact" if ok else f"MISMATCH max|diff| {(y - ref).abs().max().item():.3g}"
                except Exception as e:  # noqa: BLE001
                    ok, res = False, f"ERROR {type(e).__name__}: {str(e)[:200]}"
                failures += not ok
                say(f"{n:5d}x{k:<5d} {m:4d}  {kind or 'auto':8s} {_cfg_str(cfg):40s} {res}")
                record(n=n, k=k, m=m, kind=kind or "auto", config=_cfg_str(cfg), ok=ok, result=res)
    say(f"\ncorrectness: {'ALL EXACT' if not failures else f'{failures} FAILURES'}")
    return 1 if failures else 0


def _cfg_str(cfg) -> str:
    return (f"{cfg.kind} {cfg.block_m}x{cfg.block_n}x{cfg.block_k} s{cfg.split_k} "
            f"g{cfg.group_m} w{cfg.num_warps} st{cfg.num_stages}")


# ------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------


def stage_kernels() -> int:
    tw = kernels_mod()
    timer = Timer()
    say("median µs per call, L2 flushed before each call (cold weights); ratio = bf16 / W2A8 (>1: W2A8 faster)")
    say(f"{'N x K':>11s} {'M':>4s} {'bf16':>8s} {'W2A8':>8s} {'ratio':>6s} {'quant':>7s} {'gemm':>8s} "
        f"{'gemm TOPS':>9s} {'bf16 TFLOPS':>11s}  config")
    ratios = {}
    for i, (n, k) in enumerate(SHAPES):
        w = random_packed(n, k, seed=i)
        w16 = unpack_ternary(w.codes, k, torch.bfloat16) * 0.02
        for m in ROWS:
            x = random_x(m, k, seed=m)
            cfg = tw.pick_config(m, n, k, DEV)
            try:
                t_bf16 = timer(lambda: F.linear(x, w16)) * 1e3
                t_w2a8 = timer(lambda: tw.w2a8_matmul(x, w.codes, w.scale, k)) * 1e3
                t_quant = timer(lambda: tw.act_quant(x)) * 1e3
                xq, xs = tw.act_quant(x)
                t_gemm = timer(lambda: tw.w2a8_gemm(xq, xs, w.codes, w.scale.reshape(1), k)) * 1e3
            except Exception as e:  # noqa: BLE001
                say(f"{n:5d}x{k:<5d} {m:4d} ERROR {type(e).__name__}: {str(e)[:300]}")
                record(n=n, k=k, m=m, error=str(e))
                continue
            ops = 2.0 * m * n * k
            ratio = t_bf16 / t_w2a8
            ratios.setdefault(m, []).append(ratio)
            say(f"{n:5d}x{k:<5d} {m:4d} {t_bf16:8.1f} {t_w2a8:8.1f} {ratio:6.2f} {t_quant:7.1f} {t_gemm:8.1f} "
                f"{ops / t_gemm / 1e6:9.1f} {ops / t_bf16 / 1e6:11.1f}  {_cfg_str(cfg)}")
            record(n=n, k=k, m=m, bf16_us=t_bf16, w2a8_us=t_w2a8, quant_us=t_quant, gemm_us=t_gemm,
                   ratio=ratio, config=_cfg_str(cfg))
        w16 = None  # free the dense copy before the next shape
    say("\ngeometric-mean ratio bf16/W2A8 by M: " + ", ".join(
        f"M={m}: {statistics.geometric_mean(r):.2f}" for m, r in ratios.items()))
    return 0


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------


class DenseBF16Backend:
    """Control: the ternary weights unpacked once to dense bf16 (4× the int8, 8× the packed bytes)."""

    name = "bf16-dense"
    devices = ("cpu", "cuda")

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def prepare(weight: PackedTernary):
        return unpack_ternary(weight.codes, weight.in_features, torch.bfloat16) * weight.scale.to(torch.bfloat16)

    @staticmethod
    def matmul(x, w):
        return F.linear(x.to(torch.bfloat16), w).float()


def _ms(fn, reps: int) -> tuple[float, float]:
    """(median GPU-event ms, median wall ms) of fn() with no L2 flush (a whole forward)."""
    ev, wall = [], []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        if GPU:
            ev.append(event_ms(fn))
        else:
            fn()
        wall.append((time.perf_counter() - t0) * 1e3)
    return (statistics.median(ev) if ev else float("nan")), statistics.median(wall)


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def stage_model() -> int:
    from common import dummy_inputs, random_deploy_model

    from bitvla_ros.model.config import preset
    from bitvla_ros.model.cuda_graph import BitVLAGraphForward, CUDAGraphUnavailable

    allow_cuda_backend_on_cpu()
    register_backend(DenseBF16Backend)
    torch.set_grad_enabled(False)
    name = ARGS.preset or ("bitvla-3b" if GPU else "tiny")
    cfg = preset(name)
    reps = ARGS.reps or (20 if GPU else 1)
    t0 = time.perf_counter()
    model = random_deploy_model(cfg)
    batch = dummy_inputs(cfg)
    say(f"{name}: built in deploy form (random packed codes) in {time.perf_counter() - t0:.1f} s; "
        f"{batch['input_ids'].shape[1]} tokens, {cfg.num_images} images of {cfg.vision.image_size} px")
    model.to(DEV)
    batch = {k: v.to(DEV) for k, v in batch.items()}
    sync()
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    say(f"model tensors: {_gib(weights)}" + (f"; allocated after load {_gib(torch.cuda.memory_allocated())}" if GPU else ""))
    rc = 0
    outputs = {}

    for backend in ("cuda", "bf16-dense"):
        if not GPU and backend == "bf16-dense":
            continue
        say(f"\n--- backend {backend} ---")
        try:
            model.set_backend(backend)
            if GPU:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            out = model(**batch)
            sync()
            say(f"first forward (prepare, compile, self-check): {time.perf_counter() - t0:.2f} s")
            outputs[backend] = out
            ev, wall = _ms(lambda: model(**batch), reps)
            say(f"eager: {ev:.2f} ms GPU-event, {wall:.2f} ms wall per 8-action chunk (median of {reps})")
            rec = {"backend": backend, "preset": name, "eager_event_ms": ev, "eager_wall_ms": wall}
            gf = BitVLAGraphForward(model)
            eager_gf = gf.eager(**batch)
            same = torch.equal(eager_gf, out)
            say(f"graph-safe forward (eager) == model forward: {same}"
                + ("" if same else f" (max |diff| {(eager_gf - out).abs().max().item():.3g})"))
            if GPU:
                try:
                    t0 = time.perf_counter()
                    g_out = gf(**batch)
                    sync()
                    say(f"CUDA graph capture (incl. warm-up): {time.perf_counter() - t0:.2f} s")
                    d = (g_out - out).abs().max().item()
                    say(f"graph replay vs eager: max |diff| {d:.3g}")
                    gev, gwall = _ms(lambda: gf(**batch), reps)
                    graph, _, _ = next(iter(gf._runner._graphs.values()))
                    rev, _ = _ms(graph.replay, reps)
                    say(f"CUDA graph: {gev:.2f} ms GPU-event, {gwall:.2f} ms wall per chunk (host prep + replay); "
                        f"replay alone {rev:.2f} ms")
                    rec.update(graph_event_ms=gev, graph_wall_ms=gwall, replay_ms=rev, graph_vs_eager=d)
                except CUDAGraphUnavailable as e:
                    say(f"CUDA graph FAILED: {e}")
                    traceback.print_exc()
                    rc = 1
                peak = torch.cuda.max_memory_allocated()
                say(f"peak GPU memory (since this backend's first forward): {_gib(peak)}; "
                    f"reserved {_gib(torch.cuda.max_memory_reserved())}")
                rec.update(peak_bytes=peak)
                del gf
            record(**rec)
        except Exception as e:  # noqa: BLE001
            say(f"backend {backend} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
            rc = 1
        if backend == "bf16-dense":
            model.set_backend("cuda")  # drop the dense copies
            if GPU:
                torch.cuda.empty_cache()

    say("\n--- cuda vs reference backend (same model, same inputs) ---")
    try:
        model.set_backend("reference")
        t0 = time.perf_counter()
        ref = model(**batch)
        sync()
        say(f"reference forward: {time.perf_counter() - t0:.2f} s")
        if "cuda" in outputs:
            d = (outputs["cuda"] - ref).abs().max().item()
            say(f"cuda vs reference: bitwise equal {torch.equal(outputs['cuda'], ref)}, max |diff| {d:.3g}, "
                f"max |action| {ref.abs().max().item():.3g}")
            record(cuda_vs_reference_max_diff=d, bitwise=torch.equal(outputs["cuda"], ref))
        if "bf16-dense" in outputs:
            d = (outputs["bf16-dense"] - ref).abs().max().item()
            say(f"bf16-dense (no activation quantization) vs reference: max |diff| {d:.3g}")
    except Exception as e:  # noqa: BLE001
        say(f"reference comparison FAILED: {type(e).__name__}: {e}")
        traceback.print_exc()
        rc = 1
    return rc


# ------------------------------------------------------------------------------------------------
# sweep
# ------------------------------------------------------------------------------------------------


def _candidates(m: int, n: int, k: int):
    tw = kernels_mod()
    C = tw.W2A8Config
    base = tw.pick_config(m, n, k, DEV)
    if not GPU:
        return [base, C("dot", 16, 16, 64, 2, 2, 4, 2), C("dot_swap", 16, 32, 64, 1, 1, 4, 2)]
    split_d = tw.pick_config(m, n, k, DEV, "dot").split_k
    if m <= 4:
        out = [base]
        for bn, bk in ((32, 256), (64, 128), (128, 128), (32, 512)):
            cfg = C("gemv", min(tw._next_pow2(m), 4), bn, bk, 1, 1, 4, 2)
            out.append(cfg)
            out.append(C("gemv", cfg.block_m, bn, bk, tw._split_for(tw.triton.cdiv(n, bn), k, bk, 2 * tw.num_sms(DEV)),
                         1, 4, 2))
        for bn in (64, 128):
            out.append(C("dot_swap", 16, bn, 128, tw._split_for(tw.triton.cdiv(n, bn), k, 128, 2 * tw.num_sms(DEV)),
                         1, 4, 4))
        return out
    if m <= 16:
        out = [base, C("gemv", 4, 16, 256, base.split_k, 1, 4, 2)]
        for bn, bk, st in ((64, 256, 3), (128, 128, 4), (32, 128, 4)):
            out.append(C("dot_swap", 16, bn, bk, tw._split_for(tw.triton.cdiv(n, bn), k, bk, 2 * tw.num_sms(DEV)), 1, 4, st))
        out.append(C("dot", 16, 64, 128, base.split_k, 1, 4, 4))
        return out
    if m <= 64:
        return [base, C("dot", 64, 64, 128, split_d, 8, 4, 4), C("dot", 64, 128, 128, split_d, 8, 4, 3),
                C("dot", 64, 64, 256, split_d, 8, 4, 3), C("dot_swap", 64, 64, 128, split_d, 8, 4, 3),
                C("dot", 64, 256, 128, 1, 8, 8, 3)]
    return [base, C("dot", 128, 128, 128, 1, 8, 8, 3), C("dot", 128, 128, 64, 1, 8, 8, 4),
            C("dot", 128, 256, 128, 1, 8, 8, 3), C("dot", 256, 128, 128, 1, 8, 8, 3),
            C("dot", 128, 64, 128, 1, 8, 4, 4), C("dot", 64, 128, 128, 1, 8, 4, 4),
            C("dot_swap", 128, 128, 128, 1, 8, 8, 3)]


def stage_sweep() -> int:
    tw = kernels_mod()
    timer = Timer()
    say("gemm-only µs (pre-quantized input), L2 flushed; * = pick_config's choice; each config checked exact")
    for i, (n, k) in enumerate(SHAPES):
        w = random_packed(n, k, seed=i)
        for m in ROWS:
            x = random_x(m, k, seed=m)
            xq, xs = tw.act_quant(x)
            ref = ternary_matmul_reference(x, w)
            results = []
            for j, cfg in enumerate(_candidates(m, n, k)):
                try:
                    cfg = cfg.validate()
                    y = tw.w2a8_gemm(xq, xs, w.codes, w.scale.reshape(1), k, cfg)
                    exact = torch.equal(y, ref)
                    t = timer(lambda: tw.w2a8_gemm(xq, xs, w.codes, w.scale.reshape(1), k, cfg), reps=max(5, REPS // 2)) * 1e3
                    results.append((t, j, cfg, exact))
                except Exception as e:  # noqa: BLE001
                    say(f"  {n}x{k} M={m} {_cfg_str(cfg)}: ERROR {type(e).__name__}: {str(e)[:200]}")
            if not results:
                continue
            base_t = next((t for t, j, _, _ in results if j == 0), float("nan"))
            best = min(results, key=lambda r: r[0])
            say(f"{n:5d}x{k:<5d} M={m:4d}: heuristic {base_t:8.1f}  best {best[0]:8.1f} ({_cfg_str(best[2])})"
                + ("" if all(r[3] for r in results) else "  NOT EXACT: " + ", ".join(_cfg_str(r[2]) for r in results if not r[3])))
            for t, j, cfg, exact in sorted(results, key=lambda r: r[0]):
                say(f"      {'*' if j == 0 else ' '} {t:8.1f}  {_cfg_str(cfg)}{'' if exact else '  NOT EXACT'}")
            record(n=n, k=k, m=m, heuristic_us=base_t, best_us=best[0], best=_cfg_str(best[2]),
                   all=[(t, _cfg_str(c), e) for t, _, c, e in results])
    return 0


def main() -> int:
    if GPU and not torch.cuda.is_available():
        say("no CUDA device visible to torch: nothing to do here on cuda (use --device cpu for a dry run)")
        return 2
    say(f"[gpu_check {ARGS.stage}] device={ARGS.device} reps={REPS} results -> {RESULTS}")
    fn = {"env": stage_env, "correct": stage_correct, "kernels": stage_kernels, "model": stage_model,
          "sweep": stage_sweep}[ARGS.stage]
    t0 = time.perf_counter()
    try:
        rc = fn()
    except Exception as e:  # noqa: BLE001
        say(f"stage {ARGS.stage} FAILED: {type(e).__name__}: {e}")
        traceback.print_exc()
        rc = 1
    say(f"[gpu_check {ARGS.stage}] done in {time.perf_counter() - t0:.1f} s, rc={rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
