"""CUDA-graph capture and replay of a fixed-shape forward pass.

One BitVLA forward launches a few thousand small kernels (366 ternary linears, each an activation
quantization and a GEMM, plus norms, attention, RoPE …); launched one by one from Python that is
tens of milliseconds of CPU time. Captured once in a CUDA graph and replayed, it is one launch.

- ``CUDAGraphRunner(fn)``: captures ``fn(**tensors)`` per input signature (shapes, dtypes, device,
  and the values of non-tensor arguments), with static input buffers, a warm-up on a side stream
  before capture, one memory pool shared by its graphs, and an LRU cache of graphs. Each call
  copies the inputs into the static buffers, replays, and returns (a clone of) the outputs.
- ``BitVLAGraphForward(model)``: ``model(**batch)`` made capturable. ``BitVLA.forward`` checks the
  token layout with ``bool(tensor)`` and finds the action slots with ``nonzero()``, both of which
  synchronize with the host and cannot be captured. Here those checks and the positions of the
  image, proprio and action tokens are computed on the host from ``input_ids`` first; the device
  part (the same modules, in the same order, with ``scatter``/``gather`` at those positions) then
  has fixed shapes for a fixed token count, and the positions are ordinary static inputs, so one
  graph serves every prompt of the same length. ``eager(**batch)`` runs the same two parts without
  a graph (any device; equal to ``model(**batch)`` bit for bit, which the tests check).

Importing this module needs no GPU; making a ``CUDAGraphRunner`` without CUDA raises
``CUDAGraphUnavailable`` with the reason.
"""

from __future__ import annotations

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
    """``model(**batch)`` as a host part (checks, token positions) and a capturable device part.

    ``__call__`` replays a CUDA graph per token count (captured on first use); ``eager`` runs the
    two parts without a graph. Call ``reset()`` after changing the model's weights' storage or its
    kernel backend.
    """

    def __init__(self, model, *, warmup: int = 2, max_graphs: int = 4):
        self.model = model
        self._warmup, self._max_graphs = warmup, max_graphs
        self._runner: CUDAGraphRunner | None = None

    # --- host part ---------------------------------------------------------------------------

    def host_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None) -> dict:
        """Validate the token layout (``BitVLA.token_masks``) and add the positions of the image
        tokens, the proprio token and the read-out rows, on the model's device."""
        model, cfg = self.model, self.model.config
        ids = input_ids.detach().to("cpu")
        b = ids.shape[0]
        image_mask, proprio_mask, action_mask = model.token_masks(ids, pixel_values, proprio)
        device = input_ids.device
        out = {"input_ids": input_ids, "pixel_values": pixel_values, "attention_mask": attention_mask,
               "image_pos": image_mask.nonzero()[:, 1].view(b, cfg.num_images * cfg.vision.num_patches).to(device)}
        if proprio_mask is not None:
            out["proprio"] = proprio
            out["proprio_pos"] = proprio_mask.nonzero()[:, 1].view(b, 1).to(device)
        # Shifted read-out: slot p is predicted from the hidden state at p - 1.
        out["read_pos"] = (action_mask.nonzero()[:, 1].view(b, cfg.num_action_slots) - 1).to(device)
        return out

    # --- device part -------------------------------------------------------------------------

    def device_forward(self, input_ids, pixel_values, image_pos, read_pos, proprio=None, proprio_pos=None,
                       attention_mask=None):
        """``BitVLA.forward`` after the host part: no synchronization, fixed shapes."""
        model = self.model
        cfg, tok = model.config, model.config.tokens
        embeds = model.llm.embed_tokens(input_ids).to(model.dtype)
        h = embeds.shape[-1]
        image_feats = model.encode_images(pixel_values).to(embeds.dtype)
        embeds = embeds.scatter(1, image_pos.unsqueeze(-1).expand(-1, -1, h), image_feats)
        if model.proprio_projector is not None:
            p = model.proprio_projector(proprio.to(model.dtype)).to(embeds.dtype).reshape(-1, 1, h)
            embeds = embeds.scatter(1, proprio_pos.unsqueeze(-1).expand(-1, -1, h), p)
        action_mask = input_ids > tok.proprio
        embeds = embeds * (~action_mask).unsqueeze(-1).to(embeds.dtype)
        hidden = model.llm(embeds, attention_mask)
        idx = read_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        gathered = hidden.gather(1, idx).reshape(input_ids.shape[0], cfg.action_chunk, cfg.action_dim * hidden.shape[-1])
        return model.action_head(gathered).float()

    # --- entry points ------------------------------------------------------------------------

    def eager(self, **batch) -> torch.Tensor:
        return self.device_forward(**self.host_inputs(**batch))

    def __call__(self, **batch) -> torch.Tensor:
        if self._runner is None:
            self._runner = CUDAGraphRunner(self.device_forward, warmup=self._warmup, max_graphs=self._max_graphs)
        inputs = self.host_inputs(**batch)
        return self._runner(**inputs)

    @property
    def num_graphs(self) -> int:
        return 0 if self._runner is None else self._runner.num_graphs

    def reset(self) -> None:
        if self._runner is not None:
            self._runner.reset()
