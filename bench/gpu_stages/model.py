"""Stage model: the full-size BitVLA (random packed codes, deploy form) per 8-action chunk, for each
kernel backend a GPU can take (cuda = Triton W2A8, int8 = bitsandbytes) and dense cuBLAS bf16
weights as the baseline: eager and replayed from CUDA graphs (``DeployedForward``, the
predictor's own forward), peak GPU memory, and each output against the reference backend."""

from __future__ import annotations

import time
import traceback

import torch
import torch.nn.functional as F

from common import dummy_inputs, median, random_deploy_model, time_calls
from gpu_stages.context import Context, say

DENSE = "bf16-dense"


class DenseBF16Backend:
    """The baseline: each ternary matrix unpacked once to dense bf16 (scaled), cuBLAS F.linear,
    no activation quantization; 8x the bytes of the packed codes."""

    name = DENSE
    devices = ("cpu", "cuda")

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def prepare(weight):
        from bitvla_ros.quant import unpack_ternary

        return unpack_ternary(weight.codes, weight.in_features, torch.bfloat16) * weight.scale.to(torch.bfloat16)

    @staticmethod
    def matmul(x, w):
        return F.linear(x.to(torch.bfloat16), w).float()


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def run(ctx: Context) -> int:
    from bitvla_ros.kernels import Int8Backend, register_backend
    from bitvla_ros.model.config import preset
    from bitvla_ros.model.cuda_graph import GRAPH, DeployedForward

    register_backend(DenseBF16Backend)  # by name only: auto never takes it
    torch.set_grad_enabled(False)
    name, reps = ctx.model_preset(), ctx.repeats(20)
    cfg = preset(name)
    t0 = time.perf_counter()
    model = random_deploy_model(cfg).to(ctx.device)
    batch = {k: v.to(ctx.device) for k, v in dummy_inputs(cfg).items()}
    ctx.sync()
    tensors = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    say(f"{name}: deploy form (random packed codes) on {ctx.device} in {time.perf_counter() - t0:.1f} s; "
        f"{batch['input_ids'].shape[1]} tokens, {cfg.num_images} images of {cfg.vision.image_size} px; "
        f"model tensors {_gib(tensors)}")
    ctx.record(preset=name, tokens=batch["input_ids"].shape[1], model_bytes=tensors)
    backends = ["cuda"] + (["int8"] if Int8Backend.available_on(ctx.device.type) else []) + [DENSE]
    if "int8" not in backends:
        say("int8 fallback: not available on this device (bitsandbytes missing or its int8 matmul fails here)")
    rc, outputs = 0, {}
    for backend in backends:
        say(f"\n--- backend {backend} ---")
        try:
            model.set_backend(backend)
            if ctx.gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(ctx.device)
            t0 = time.perf_counter()
            outputs[backend] = model(**batch)
            ctx.sync()
            say(f"first forward (prepare, compile, self-check): {time.perf_counter() - t0:.2f} s")
            eager = median(time_calls(lambda: model(**batch), reps, warmup=1, device=ctx.device)) * 1e3
            say(f"eager: {eager:.2f} ms per 8-action chunk (median of {reps})")
            rec = {"backend": backend, "preset": name, "eager_ms": eager}
            forward = DeployedForward(model, log=say)
            say(f"deployed forward: {forward.mode} ({forward.reason})")
            if forward.mode == GRAPH:
                t0 = time.perf_counter()
                graphed = forward(**batch)
                ctx.sync()
                say(f"CUDA graph capture (warm-up included): {time.perf_counter() - t0:.2f} s")
                if forward.mode != GRAPH:
                    say(f"CUDA graph FAILED, the forward fell back to eager: {forward.reason}")
                    rc = 1
                same = torch.equal(graphed, outputs[backend])
                graph = median(time_calls(lambda: forward(**batch), reps, warmup=1, device=ctx.device)) * 1e3
                wall = median(time_calls(lambda: (forward(**batch), ctx.sync()), reps, warmup=1)) * 1e3
                say(f"CUDA graph: {graph:.2f} ms GPU per chunk, {wall:.2f} ms wall (host part + replay + sync); "
                    f"equal to eager bit for bit: {same}")
                rec.update(graph_ms=graph, graph_wall_ms=wall, graph_equals_eager=same)
            if ctx.gpu:
                peak = torch.cuda.max_memory_allocated(ctx.device)
                say(f"peak GPU memory (this backend, eager + graph): {_gib(peak)} allocated, "
                    f"{_gib(torch.cuda.max_memory_reserved(ctx.device))} reserved")
                rec.update(peak_allocated_bytes=peak, peak_reserved_bytes=torch.cuda.max_memory_reserved(ctx.device))
            del forward
            ctx.record(**rec)
        except Exception as e:  # noqa: BLE001
            say(f"backend {backend} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
            rc = 1
    model.set_backend("reference")  # drops the dense and int8 copies
    if ctx.gpu:
        torch.cuda.empty_cache()
    say("\n--- against the reference backend (same model, same inputs) ---")
    try:
        ref = model(**batch)
        for backend, out in outputs.items():
            d = (out - ref).abs().max().item()
            exact = torch.equal(out, ref)
            say(f"{backend:10s} vs reference: bit for bit {exact}, max |diff| {d:.3g} (max |action| "
                f"{ref.abs().max().item():.3g})" + ("  (no activation quantization: not exact)" if backend == DENSE else ""))
            ctx.record(backend=backend, vs_reference_max_diff=d, bitwise=exact)
            if backend != DENSE and not exact:
                rc = 1
    except Exception as e:  # noqa: BLE001
        say(f"reference comparison FAILED: {type(e).__name__}: {e}")
        traceback.print_exc()
        rc = 1
    return rc
