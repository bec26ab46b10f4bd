"""CUDA-graph capture and replay of a fixed-shape forward pass.

One BitVLA forward launches a few thousand small kernels (366 ternary linears, each an activation
quantization and a GEMM, plus norms, attention, RoPE …); launched one by one from Python that is
tens of milliseconds of CPU time. Captured once in a CUDA graph and replayed, it is one launch.

- ``CUDAGraphRunner(fn)``: captures ``fn(**tensors)`` per input signature (shapes, dtypes, device,
  and the values of non-tensor arguments), with static input buffers, a warm-up on a side stream
  before capture, one memory pool shared by its graphs, and an LRU cache of graphs. Each call
  copies the inputs into the static buffers, replays, and returns (a clone of) the outputs.
- ``BitVLAGraphForward(model)``: ``model(**batch)`` with its device part in a graph.
  ``BitVLA.forward`` is a host part (``token_positions``: layout checks with ``bool(tensor)``, token
  positions with ``nonzero()``, which cannot be captured) and a device part (``forward_at``: fixed
  shapes for a fixed token count, positions as ordinary inputs). Only the device part is captured,
  so one graph serves every prompt of the same length, and there is no second copy of the forward.
- ``DeployedForward(model)``: what the predictor runs per chunk, graph or eager, and why.

Importing this module needs no GPU; making a ``CUDAGraphRunner`` without CUDA raises
``CUDAGraphUnavailable`` with the reason.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable

import torch


class CUDAGraphUnavailable(RuntimeError):
    """CUDA graphs cannot be used here (no CUDA device, CPU tensors, or a capture failure)."""


def cuda_graphs_available() -> tuple[bool, str]:
    """(usable, reason): whether torch can capture CUDA graphs on this machine."""
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device, so there are no CUDA graphs to capture"
    if not hasattr(torch.cuda, "CUDAGraph"):
        return False, f"torch {torch.__version__} has no torch.cuda.CUDAGraph"
    return True, "ok"


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


class CUDAGraphRunner:
    """Capture ``fn(**inputs)`` once per input signature and replay it.

    ``fn`` must be capturable: no host synchronization (``.item()``, ``bool(t)``, ``nonzero()``,
    CPU↔GPU copies), no data-dependent shapes, and the same kernels for the same shapes. Anything
    ``fn`` needs prepared once (compiled kernels, prepared weights, autotuning) happens during the
    warm-up calls, which run eagerly on a side stream before the capture.
    """

    def __init__(self, fn: Callable[..., Any], *, warmup: int = 2, clone_outputs: bool = True,
                 max_graphs: int = 4, no_grad: bool = True):
        ok, why = cuda_graphs_available()
        if not ok:
            raise CUDAGraphUnavailable(why)
        if warmup < 1:
            raise ValueError("at least one warm-up call is needed before a capture")
        self.fn, self.warmup, self.clone_outputs = fn, warmup, clone_outputs
        self.max_graphs, self.no_grad = max_graphs, no_grad
        self._graphs: OrderedDict = OrderedDict()  # signature -> (graph, static inputs, static outputs)
        self._pool = None

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def reset(self) -> None:
        """Drop every captured graph (e.g. after the model's weights or backend changed)."""
        self._graphs.clear()
        self._pool = None

    @staticmethod
    def signature(inputs: dict) -> tuple:
        sig = []
        for name in sorted(inputs):
            v = inputs[name]
            if isinstance(v, torch.Tensor):
                sig.append((name, tuple(v.shape), v.dtype, v.device))
            else:
                try:
                    hash(v)
                except TypeError:
                    raise TypeError(f"argument {name!r} is neither a tensor nor hashable; cannot key a CUDA graph on it") from None
                sig.append((name, "value", v))
        return tuple(sig)

    def __call__(self, **inputs):
        devices = {v.device for v in inputs.values() if isinstance(v, torch.Tensor)}
        if not devices:
            raise ValueError("a CUDA graph needs at least one tensor input")
        if any(d.type != "cuda" for d in devices) or len(devices) > 1:
            raise CUDAGraphUnavailable(f"CUDA graphs need every tensor input on one CUDA device, got {sorted(map(str, devices))}")
        sig = self.signature(inputs)
        entry = self._graphs.get(sig)
        if entry is None:
            entry = self._capture(inputs, next(iter(devices)))
            self._graphs[sig] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(sig)
        graph, static_in, static_out = entry
        for name, buf in static_in.items():
            buf.copy_(inputs[name])
        graph.replay()
        if self.clone_outputs:
            return _map_tensors(static_out, lambda t: t.clone())
        return static_out

    def _capture(self, inputs: dict, device: torch.device):
        static_in = {k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        args = {**inputs, **static_in}
        grad_ctx = torch.no_grad if self.no_grad else torch.enable_grad
        with torch.cuda.device(device), grad_ctx():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(**args)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self._pool):
                    static_out = self.fn(**args)
            except Exception as e:
                raise CUDAGraphUnavailable(
                    f"capturing the forward in a CUDA graph failed ({type(e).__name__}: {e}); the usual cause is a "
                    "host synchronization inside it (.item(), bool(tensor), nonzero(), a CPU↔GPU copy)"
                ) from e
        return graph, static_in, static_out


class BitVLAGraphForward:
    """``model(**batch)`` with its device part replayed from a CUDA graph.

    ``BitVLA.forward`` is ``token_positions`` (host: layout checks, token positions) then
    ``forward_at`` (device, fixed shapes for a fixed token count). This runs the first eagerly and
    replays a graph of the second, captured per token count on first use (so one graph serves
    every prompt of the same length). Call ``reset()`` after changing the model's weights' storage
    or its kernel backend.
    """

    def __init__(self, model, *, warmup: int = 2, max_graphs: int = 4):
        self.model = model
        self._runner = CUDAGraphRunner(model.forward_at, warmup=warmup, max_graphs=max_graphs)

    def __call__(self, **batch) -> torch.Tensor:
        return self._runner(**self.model.token_positions(**batch))

    def replay(self, positions: dict) -> tuple[torch.Tensor, bool]:
        """``forward_at(**positions)`` from its graph; and whether that graph was captured now."""
        new = self._runner.signature(positions) not in self._runner._graphs
        return self._runner(**positions), new

    @property
    def num_graphs(self) -> int:
        return self._runner.num_graphs

    def reset(self) -> None:
        self._runner.reset()


GRAPH, EAGER = "cuda-graph", "eager"


class DeployedForward:
    """The forward a predictor runs per chunk: ``model(**batch)``, replayed from CUDA graphs where
    the model is on a CUDA device (and ``cuda_graphs`` is not False), eager elsewhere.

    ``mode`` (GRAPH or EAGER) and ``reason`` say which and why. A prompt of a new token count is
    captured on its first chunk (logged); should a capture fail, the forward falls back to eager
    for good and ``reason`` says why. Both modes run the same ``BitVLA.forward_at``.
    """

    def __init__(self, model, cuda_graphs: bool | None = None, log: Callable[[str], None] | None = None):
        self.model, self._log = model, log or (lambda msg: None)
        device = model.device
        self._graph = None
        if cuda_graphs is False:
            self.mode, self.reason = EAGER, "CUDA graphs turned off"
        elif device.type != "cuda":
            self.mode, self.reason = EAGER, f"model on {device}: CUDA graphs need a CUDA device"
        else:
            ok, why = cuda_graphs_available()
            if ok:
                self._graph = BitVLAGraphForward(model)
                self.mode, self.reason = GRAPH, f"model on {device}: one CUDA graph per prompt length, replayed per chunk"
            else:
                self.mode, self.reason = EAGER, why
        if cuda_graphs is True and self.mode != GRAPH:
            raise CUDAGraphUnavailable(f"CUDA graphs were requested but cannot be used: {self.reason}")

    def __call__(self, **batch) -> torch.Tensor:
        positions = self.model.token_positions(**batch)
        if self._graph is None:
            return self.model.forward_at(**positions)
        start = time.perf_counter()
        try:
            out, new = self._graph.replay(positions)
        except CUDAGraphUnavailable as e:
            self._graph, self.mode, self.reason = None, EAGER, f"capture failed, running eagerly: {e}"
            self._log(f"CUDA graph {self.reason}")
            return self.model.forward_at(**positions)
        if new:
            self._log(f"captured a CUDA graph for {batch['input_ids'].shape[1]} tokens "
                      f"(warm-up included) in {time.perf_counter() - start:.2f} s")
        return out

    @property
    def num_graphs(self) -> int:
        return 0 if self._graph is None else self._graph.num_graphs

    def reset(self) -> None:
        if self._graph is not None:
            self._graph.reset()
