"""`auto` on a CPU, measured: time every available backend (and kernel variant) on the model's
own matmul shapes, keep the fastest, remember it per machine.

Which backend wins depends on the CPU, not on a rule: oneDNN's int8 GEMM behind `torch._int_mm`
(AMX tiles on a Xeon that has them) can beat the packed C++ kernel on one machine and lose to it
on the next. So the first load on a machine times each candidate on one layer of each distinct
(rows, in, out) shape of the model, weighted by how many layers have that shape, and caches the
result on disk under a key of CPU model + instruction sets + thread count + torch version + the
shapes. Later loads on the same machine read the cache.

Timing uses the minimum of a few calls per shape, the candidates interleaved call by call: on a
shared machine the slower calls measure the neighbours, not the kernel, and a burst of load falls
on every candidate alike. A candidate far behind after the warm-up round or a timed round is
dropped (its time recorded as None), so the slow oracle costs little.

``BITVLA_AUTOTUNE=0`` turns measuring off (auto then takes the registry's static order);
``BITVLA_CACHE_DIR`` moves the cache (default: ``$XDG_CACHE_HOME/bitvla_ros``, else
``~/.cache/bitvla_ros``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bitvla_ros.kernels import attention, elementwise
from bitvla_ros.kernels.registry import AUTO_ORDER, available_backends, get_backend
from bitvla_ros.quant import PackedTernary

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the int8 backend offers a packed-weights variant
CACHE_FILE = "kernel_autotune.json"
DROP_RATIO = 2.0
WARMUP_DROP_RATIO = 4.0  # first calls are noisier (allocation, primitive creation)
REPEATS = 3
# How much faster than the fastest packed-weight candidate one that unpacks the weights (4x the
# memory) must be to be chosen.
EXPANSION_MARGIN = 0.10
# The instruction sets that decide which integer units a kernel can use.
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class Candidate:
    """A backend and one setting of its knobs (e.g. the cpu kernel's instruction set)."""

    backend: str
    variant: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return self.backend + (f"[{','.join(f'{k}={v}' for k, v in self.variant)}]" if self.variant else "")

    @classmethod
    def from_label(cls, label: str) -> "Candidate":
        name, _, rest = label.partition("[")
        pairs = tuple(tuple(kv.split("=", 1)) for kv in rest.rstrip("]").split(",") if kv) if rest else ()
        return cls(name, pairs)


@dataclass(frozen=True)
class Workload:
    """``count`` layers whose matmul is (rows, in_features) x (out_features, in_features)ᵀ;
    ``weight`` is one of them, timed on behalf of all."""

    rows: int
    weight: PackedTernary
    count: int

    @property
    def key(self) -> str:
        return f"{self.rows}x{self.weight.in_features}x{self.weight.out_features}*{self.count}"


@dataclass
class Tuning:
    """What `auto` chose on this machine and the timings behind it (seconds per set of layers)."""

    choice: Candidate
    seconds: dict[str, float | None]
    machine: str
    source: str  # "measured" or "cache"
    workload: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def describe(self) -> str:
        best = self.seconds.get(self.choice.label)
        parts = []
        for label, s in sorted(self.seconds.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0)):
            if s is None:
                parts.append(f"{label} dropped (> {DROP_RATIO:g}x)")
            else:
                parts.append(f"{label} {s * 1e3:.1f} ms" + (f" ({s / best:.2f}x)" if best and label != self.choice.label else ""))
        return f"auto -> {self.choice.label} ({self.source} {self.when} on {self.machine}): " + ", ".join(parts)

    def to_json(self) -> dict:
        return {"choice": self.choice.label, "seconds": self.seconds, "machine": self.machine,
                "workload": self.workload, "when": self.when}

    @classmethod
    def from_json(cls, d: dict) -> "Tuning":
        return cls(Candidate.from_label(d["choice"]), dict(d["seconds"]), d["machine"], "cache",
                   d.get("workload", ""), d.get("when", ""))


# --- the machine ---------------------------------------------------------------------------------

def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in ISA_FLAGS if f in flags]


def machine_id(threads: int | None = None) -> str:
    threads = threads or torch.get_num_threads()
    return f"{cpu_model()} [{' '.join(isa_flags()) or 'no SIMD flags'}] {threads} threads, torch {torch.__version__}"


def cache_path() -> Path:
    root = os.environ.get("BITVLA_CACHE_DIR")
    if root:
        return Path(root) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bitvla_ros" / CACHE_FILE


def enabled() -> bool:
    return os.environ.get("BITVLA_AUTOTUNE", "1").strip().lower() not in ("0", "off", "false", "no")


# --- candidates and timing -----------------------------------------------------------------------

def candidates(device: str = "cpu", backends: Sequence[str] | None = None) -> list[Candidate]:
    """Every available backend on ``device``, once per variant it offers (``variants()``)."""
    out = []
    names = list(backends) if backends is not None else available_backends(device)
    # The registry's static order first: a slow candidate timed after a fast one is dropped early.
    names.sort(key=lambda n: AUTO_ORDER.index(n) if n in AUTO_ORDER else len(AUTO_ORDER))
    for name in names:
        backend = get_backend(name, device)
        for variant in getattr(backend, "variants", lambda: [{}])():
            out.append(Candidate(name, tuple(sorted((str(k), str(v)) for k, v in variant.items()))))
    return out


def configure(backend, candidate: Candidate) -> None:
    if candidate.variant:
        backend.configure(**dict(candidate.variant))


def _min_time(fn: Callable[[], object], repeats: int, timer: Callable[[], float]) -> float:
    fn()  # warm-up: first-call costs (allocation, a oneDNN primitive) are not the steady state
    best = float("inf")
    for _ in range(repeats):
        start = timer()
        fn()
        best = min(best, timer() - start)
    return best


def _time_once(fn: Callable[[], object], timer: Callable[[], float]) -> float:
    start = timer()
    fn()
    return timer() - start


def measure(cands: Sequence[Candidate], work: Sequence[Workload], *, dtype: torch.dtype = torch.bfloat16,
            repeats: int = REPEATS, timer: Callable[[], float] = time.perf_counter,
            resolve: Callable[[str], object] | None = None, seed: int = 0) -> dict[str, float | None]:
    """Seconds for one set of layers (Σ count · min call time) per candidate label; None where a
    candidate was dropped.

    Rounds interleave the candidates shape by shape, so that a burst of load from a neighbour
    falls on all of them alike. Round 0 is the warm-up (first-call costs); a candidate more than
    ``WARMUP_DROP_RATIO`` x the best there, or ``DROP_RATIO`` x the best after a timed round,
    is not timed further."""
    resolve = resolve or (lambda name: get_backend(name, "cpu"))
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(w.rows, w.weight.in_features, generator=gen).to(dtype) for w in work]
    alive = list(cands)
    best: dict[str, list[float]] = {c.label: [float("inf")] * len(work) for c in cands}
    dropped: set[str] = set()
    for rnd in range(repeats + 1):
        warm: dict[str, float] = {}
        for i, w in enumerate(work):
            for cand in alive:
                backend = resolve(cand.backend)
                configure(backend, cand)
                prepared = backend.prepare(w.weight)  # one layer's worth, freed after the call
                t = _time_once(lambda: backend.matmul(inputs[i], prepared), timer)
                del prepared
                if rnd == 0:
                    warm[cand.label] = warm.get(cand.label, 0.0) + w.count * t
                else:
                    best[cand.label][i] = min(best[cand.label][i], t)
        if rnd == 0:
            totals, ratio = warm, WARMUP_DROP_RATIO
        else:
            totals = {c.label: sum(w.count * t for w, t in zip(work, best[c.label])) for c in alive}
            ratio = DROP_RATIO
        fastest = min(totals.values()) if totals else 0.0
        for cand in list(alive):
            if totals[cand.label] > ratio * fastest and len(alive) > 1:
                alive.remove(cand)
                dropped.add(cand.label)
    first: dict[str, Candidate] = {}
    for cand in cands:  # leave every backend at its first (default) variant, not the last one timed
        first.setdefault(cand.backend, cand)
    for cand in first.values():
        configure(resolve(cand.backend), cand)
    return {c.label: None if c.label in dropped else sum(w.count * t for w, t in zip(work, best[c.label]))
            for c in cands}


def select(seconds: dict[str, float | None], expanding: Sequence[str] = ()) -> Candidate:
    """The fastest candidate; one of ``expanding`` (labels of candidates that hold the weights
    unpacked, e.g. int8 at 4x the packed bytes) only if it beats the fastest packed one by more
    than ``EXPANSION_MARGIN``: a few percent of speed is not worth a model four times the size."""
    timed = {k: v for k, v in seconds.items() if v is not None}
    if not timed:
        raise RuntimeError("no kernel candidate could be timed")
    best = min(timed, key=timed.get)
    packed = {k: v for k, v in timed.items() if k not in expanding}
    if best in expanding and packed:
        best_packed = min(packed, key=packed.get)
        if packed[best_packed] <= timed[best] * (1 + EXPANSION_MARGIN):
            best = best_packed
    return Candidate.from_label(best)


def expanding_labels(cands: Sequence[Candidate], resolve: Callable[[str], object] | None = None) -> list[str]:
    """The candidates whose backend says this variant keeps an unpacked copy of the weights."""
    resolve = resolve or (lambda name: get_backend(name, "cpu"))
    out = []
    for cand in cands:
        expands = getattr(resolve(cand.backend), "expands_weights", None)
        if expands is not None and expands(**dict(cand.variant)):
            out.append(cand.label)
    return out


# --- the cache -----------------------------------------------------------------------------------

def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if data.get("version") == CACHE_VERSION else {}


def _write_cache(path: Path, key: str, tuning: Tuning) -> None:
    entries = _read_cache(path)
    entries[key] = tuning.to_json()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: two processes tuning at once leave one complete file
    except OSError as e:
        log.warning("kernel autotune: could not write the cache %s: %s", path, e)


def cached(machine: str | None = None, path: Path | None = None) -> list[Tuning]:
    """The tunings stored for this machine (any model shapes)."""
    machine = machine or machine_id()
    return [Tuning.from_json(e) for e in _read_cache(path or cache_path()).values() if e.get("machine") == machine]


# --- the choice ----------------------------------------------------------------------------------

def tune(work: Sequence[Workload], *, dtype: torch.dtype = torch.bfloat16, path: Path | None = None,
         use_cache: bool = True, cands: Sequence[Candidate] | None = None,
         resolve: Callable[[str], object] | None = None, **measure_kwargs) -> Tuning:
    """The fastest candidate for this workload on this CPU: from the cache, or measured now (and
    stored). The winner's variant is applied to its backend."""
    workload = f"{str(dtype).removeprefix('torch.')} " + " ".join(w.key for w in work)
    cands = list(cands) if cands is not None else candidates("cpu")
    tuning = _tune(workload, [c.label for c in cands],
                   lambda: measure(cands, work, dtype=dtype, resolve=resolve, **measure_kwargs),
                   path, use_cache, "ternary kernel backend", expanding_labels(cands, resolve))
    configure((resolve or (lambda name: get_backend(name, "cpu")))(tuning.choice.backend), tuning.choice)
    return tuning


# --- attention -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionShape:
    """``count`` attention calls of (heads, kv_heads, tokens, head_dim) per chunk."""

    heads: int
    kv_heads: int
    tokens: int
    head_dim: int
    count: int

    @property
    def key(self) -> str:
        return f"{self.heads}/{self.kv_heads}x{self.tokens}x{self.head_dim}*{self.count}"


def measure_calls(calls: dict[str, Sequence[tuple[Callable[[], object], int]]], *, repeats: int = REPEATS,
                  timer: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per chunk for each implementation: Σ count · min call time over its (call, count)
    pairs, the implementations interleaved call by call (round 0 warms up)."""
    names = list(calls)
    best = {name: [float("inf")] * len(calls[name]) for name in names}
    for rnd in range(repeats + 1):
        for i in range(len(calls[names[0]])):
            for name in names:
                t = _time_once(calls[name][i][0], timer)
                if rnd:
                    best[name][i] = min(best[name][i], t)
    return {name: sum(count * t for (_, count), t in zip(calls[name], best[name])) for name in names}


def measure_attention(shapes: Sequence[AttentionShape], *, dtype: torch.dtype = torch.bfloat16,
                      impls: Sequence[str] = attention.IMPLS, seed: int = 0, **kwargs) -> dict[str, float]:
    """Seconds per chunk of each attention implementation on these shapes."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [tuple(torch.randn(1, h, s.tokens, s.head_dim, generator=gen).to(dtype)
                    for h in (s.heads, s.kv_heads, s.kv_heads)) for s in shapes]
    calls = {name: [((lambda f=attention.get(name), x=x: f(*x)), s.count) for s, x in zip(shapes, inputs)]
             for name in impls}
    return measure_calls(calls, **kwargs)


def measure_elementwise(rows: int, hidden: int, intermediate: int, layers: int, *,
                        dtype: torch.dtype = torch.bfloat16, seed: int = 0, **kwargs) -> dict[str, float]:
    """Seconds per chunk of the LLM's RMSNorms (three of width hidden and one of width
    intermediate per layer) and its GLU, per implementation (kernels/elementwise.py)."""
    gen = torch.Generator().manual_seed(seed)
    xh, xi, up = (torch.randn(rows, d, generator=gen).to(dtype) for d in (hidden, intermediate, intermediate))
    wh, wi = torch.ones(hidden, dtype=dtype), torch.ones(intermediate, dtype=dtype)
    calls = {name: [(lambda n=name: elementwise.rms_norm(xh, wh, 1e-5, n), 3 * layers),
                    (lambda n=name: elementwise.rms_norm(xi, wi, 1e-5, n), layers),
                    (lambda n=name: elementwise.relu2_glu(xi, up, n), layers)]
             for name in elementwise.IMPLS}
    return measure_calls(calls, **kwargs)


def tune_attention(shapes: Sequence[AttentionShape], *, dtype: torch.dtype = torch.bfloat16,
                   path: Path | None = None, use_cache: bool = True, **measure_kwargs) -> Tuning:
    """The faster attention implementation for these shapes on this CPU, cached like the kernels'."""
    workload = f"attention {str(dtype).removeprefix('torch.')} " + " ".join(s.key for s in shapes)
    return _tune(workload, attention.IMPLS, lambda: measure_attention(shapes, dtype=dtype, **measure_kwargs),
                 path, use_cache, "attention")


def tune_elementwise(rows: int, hidden: int, intermediate: int, layers: int, *, dtype: torch.dtype = torch.bfloat16,
                     path: Path | None = None, use_cache: bool = True, **measure_kwargs) -> Tuning:
    """Fused or torch RMSNorm / GLU for these shapes on this CPU, cached like the kernels'."""
    workload = f"elementwise {str(dtype).removeprefix('torch.')} {rows}x{hidden}/{intermediate}*{layers}"
    return _tune(workload, elementwise.IMPLS,
                 lambda: measure_elementwise(rows, hidden, intermediate, layers, dtype=dtype, **measure_kwargs),
                 path, use_cache, "RMSNorm / GLU")


def _tune(workload: str, allowed: Sequence[str], measure_now: Callable[[], dict[str, float | None]],
          path: Path | None, use_cache: bool, what: str, expanding: Sequence[str] = ()) -> Tuning:
    """A measured choice among ``allowed``, read from this machine's cache or measured and stored."""
    machine = machine_id()
    key = f"{machine} | {workload}"
    path = path or cache_path()
    if use_cache:
        entry = _read_cache(path).get(key)
        if entry is not None and entry.get("choice") in allowed:
            return Tuning.from_json(entry)
    start = time.perf_counter()
    seconds = measure_now()
    tuning = Tuning(select(seconds, expanding), seconds, machine, "measured", workload)
    log.info("%s autotune took %.1f s", what, time.perf_counter() - start)
    if use_cache:
        _write_cache(path, key, tuning)
    log.info("%s for cpu tensors: %s", what, tuning.describe())
    return tuning


def static_choice(device: str = "cpu") -> str:
    """What `auto` takes without measuring: the registry's order."""
    return get_backend("auto", device).name


__all__ = ["AttentionShape", "Candidate", "Tuning", "Workload", "cached", "measure_attention", "measure_calls",
           "measure_elementwise", "tune_attention", "tune_elementwise", "candidates", "cpu_model", "enabled",
           "isa_flags", "machine_id", "measure", "select", "static_choice", "tune"]
