"""Stage node: policy_node over DDS (its own process) on the full-size model with random packed
weights, `device: auto` and `backend: auto` (on a GPU: Triton W2A8, CUDA graphs) and then the
int8 fallback: chunk latency end to end (image stamp -> JointTrajectory received) and inference
alone (the node's /diagnostics), p50/p95; host RSS peak; GPU memory nvidia-smi shows for the node."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import ros_isolation, random_model_folder
from gpu_stages.context import Context, say


def run(ctx: Context, seconds: float | None = None) -> int:
    import importlib.util

    from bitvla_ros.kernels import Int8Backend
    from bitvla_ros.model.config import preset

    if importlib.util.find_spec("rclpy") is None:
        why = "rclpy is not importable by this Python: install requirements.txt (the ROS 2 wheels) to run the node"
        say(f"node stage SKIPPED: {why}")
        ctx.record(skipped=why)
        return 1
    ros_isolation()
    import ros_latency  # imports rclpy: after the isolation

    name = ctx.model_preset()
    root = Path(tempfile.mkdtemp(prefix="bitvla-gpu-node-", dir=ctx.out_dir))
    t0 = time.perf_counter()
    folder = random_model_folder(root / name, config=None if name == "tiny" else preset(name))
    size = sum(f.stat().st_size for f in folder.iterdir())
    say(f"{name}: packed folder with random codes written in {time.perf_counter() - t0:.1f} s ({size / 2**30:.2f} GiB)")
    # auto = what a user gets; on a CPU dry run the Triton interpreter stands in for the GPU kernels.
    runs = [("auto" if ctx.gpu else "cuda", "auto")]
    if ctx.gpu and Int8Backend.available_on("cuda"):
        runs.append(("int8", "auto"))
    rc = 0
    try:
        for backend, device in runs:
            say(f"\n--- policy_node, backend {backend}, device {device} ---")
            try:
                r = ros_latency.measure(str(folder), backend=backend, device=device,
                                        seconds=seconds or (20.0 if ctx.gpu else 12.0),
                                        load_timeout_s=240.0 if ctx.gpu else 180.0, log=say)
            except Exception as e:  # noqa: BLE001
                say(f"policy_node run FAILED: {type(e).__name__}: {e}")
                rc = 1
                continue
            say(f"chose: device {r.get('device')} ({r.get('device_reason')}); backend {r.get('backend')} "
                f"({r.get('backend_reason')}); forward {r.get('forward')}")
            say(f"{r['chunks']} chunks in {r['seconds']:.0f} s: end to end p50 {r['e2e_p50_ms']:.1f} ms, p95 "
                f"{r['e2e_p95_ms']:.1f} ms; inference p50 {r.get('inference_p50_ms', float('nan')):.1f} ms, p95 "
                f"{r.get('inference_p95_ms', float('nan')):.1f} ms; host RSS peak {r['host_rss_peak_mb'] or 0:.0f} MB; "
                f"GPU memory (nvidia-smi) {r['gpu_memory_peak_mb_nvidia_smi']} MB; first chunk "
                f"{r['first_chunk_after_start_s'] or float('nan'):.1f} s after start, its latency "
                f"{r['first_chunk_e2e_ms'] or float('nan'):.0f} ms")
            ctx.record(preset=name, requested_backend=backend, **r)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rc
