"""Stage env: versions, the device, and what each kernel backend and the device setting choose here."""

from __future__ import annotations

import os
import sys
import time

import torch

from gpu_stages.context import Context, say


def run(ctx: Context) -> int:
    from bitvla_ros.kernels import CudaBackend, available_backends
    from bitvla_ros.kernels.int8 import cuda_int8_status
    from bitvla_ros.kernels.registry import backend_reason
    from bitvla_ros.model.device import resolve_device

    say(f"python {sys.version.split()[0]} at {sys.executable}")
    say(f"torch {torch.__version__} (CUDA build {torch.version.cuda}); cuda available: {torch.cuda.is_available()}")
    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    try:
        import triton

        say(f"triton {triton.__version__}; TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}")
        info["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        say(f"triton NOT importable: {type(e).__name__}: {e}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        l2 = getattr(props, "L2_cache_size", 0)
        say(f"device 0: {props.name}, capability {cap[0]}.{cap[1]}, {props.multi_processor_count} SMs, "
            f"{props.total_memory / 2**30:.1f} GiB, L2 {l2 / 2**20:.0f} MiB; {torch.cuda.device_count()} device(s)")
        info.update(gpu=props.name, capability=f"{cap[0]}.{cap[1]}", sms=props.multi_processor_count)
    choice = resolve_device("auto")
    say(f"device auto -> {choice.device} ({choice.reason})")
    say(f"backends available on {ctx.device.type}: {available_backends(ctx.device)}")
    say(f"backend auto: {backend_reason('auto', ctx.device)}")
    ok, why = CudaBackend.status()
    int8_ok, int8_why = cuda_int8_status() if ctx.gpu else (False, "no GPU")
    say(f"cuda backend: {ok} ({why}); int8 on CUDA: {int8_ok} ({int8_why})")
    info.update(auto_device=str(choice.device), auto_device_reason=choice.reason,
                auto_backend_reason=backend_reason("auto", ctx.device), cuda_backend=ok, cuda_backend_reason=why,
                int8_cuda=int8_ok, int8_cuda_reason=int8_why)
    rc = 0
    if ok and ctx.gpu:
        from bitvla_ros.kernels.triton_backend import self_check

        t0 = time.perf_counter()
        try:
            broken = self_check(ctx.device)
            say(f"self-check: {'all kernel kinds exact' if not broken else 'BROKEN kinds: ' + str(sorted(broken))} "
                f"({time.perf_counter() - t0:.1f} s incl. compiles)")
            info.update(self_check_broken=sorted(broken))
            rc = 1 if broken else 0
        except Exception as e:  # noqa: BLE001
            say(f"self-check FAILED: {type(e).__name__}: {e}")
            info.update(self_check_error=str(e))
            rc = 1
    ctx.record(**info)
    return rc
