"""Shared pieces of the benchmarks: resident memory, a random full-size model in deploy form,
and one observation's worth of model inputs. Not a test helper: nothing here asserts."""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitvla_ros.model.bitvla import BitVLA  # noqa: E402
from bitvla_ros.model.config import BitVLAConfig  # noqa: E402

# Every byte whose four 2-bit fields are valid ternary codes (0, 1 or 2): 3^4 = 81 of them.
_VALID_BYTES = torch.tensor([b for b in range(256) if all((b >> s) & 3 != 3 for s in (0, 2, 4, 6))],
                            dtype=torch.uint8)


def release_free_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise), so RSS shows live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb(trim: bool = True) -> float:
    """Whole-process resident MB; ``trim=False``: as the process holds it, freed heap included."""
    if trim:
        release_free_heap()
    return _status_kb("VmRSS") / 1024


def rss_split_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident MB: heap vs pages mapped from model files."""
    release_free_heap()
    return _status_kb("RssAnon") / 1024, _status_kb("RssFile") / 1024


def mapped_rss_mb(path: str | Path) -> float:
    """Resident MB of this process's mappings of one file (e.g. a memory-mapped model)."""
    target, total_kb, inside = str(Path(path).resolve()), 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[5] == target  # a mapping header line
        elif inside and fields[0] == "Rss:":
            total_kb += int(fields[1])
    return total_kb / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def random_deploy_model(config: BitVLAConfig, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> BitVLA:
    """The model built directly in deploy form: random packed ternary codes, random int8
    embedding rows, small random bf16 tensors elsewhere. No float ternary weight ever exists."""
    gen = torch.Generator().manual_seed(seed)
    model = BitVLA.deploy_skeleton(config)
    state = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.dtype == torch.uint8:  # packed ternary codes
            state[name] = _VALID_BYTES[torch.randint(0, len(_VALID_BYTES), t.shape, generator=gen)]
        elif t.dtype == torch.int8:  # embedding rows
            state[name] = torch.randint(-127, 128, t.shape, generator=gen, dtype=torch.int8)
        elif name.endswith("weight_scale"):
            state[name] = torch.tensor(0.02)
        elif name.endswith("row_scale"):
            state[name] = torch.full(t.shape, 0.02 / 127)
        elif "norm" in name and name.endswith("weight"):
            state[name] = torch.ones(t.shape, dtype=dtype)
        elif name.endswith("bias"):
            state[name] = torch.zeros(t.shape, dtype=dtype)
        else:
            state[name] = (torch.randn(t.shape, generator=gen) * 0.02).to(dtype)
    model.load_state_dict(state, assign=True)
    return model.eval()


def dummy_inputs(config: BitVLAConfig, prompt_words: int = 12, seed: int = 0) -> dict:
    """Model inputs with the published token layout for one observation (random pixels)."""
    gen = torch.Generator().manual_seed(seed)
    t = config.tokens
    text = lambda n: torch.randint(1, t.bos, (n,), generator=gen).tolist()  # ordinary tokens sit below BOS  # noqa: E731
    ids = ([t.bos] + text(35) + [t.eot] + text(3) + [t.image] * (config.num_images * config.vision.num_patches)
           + ([t.proprio] if config.use_proprio else []) + text(prompt_words) + [t.eot] + text(3)
           + [t.first_action] * config.num_action_slots + [t.stop])
    ids = torch.tensor([ids])
    s = config.vision.image_size
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "pixel_values": torch.rand(1, config.num_images, 3, s, s, generator=gen) * 2 - 1}
    if config.use_proprio:
        batch["proprio"] = torch.rand(1, config.proprio_dim, generator=gen) * 2 - 1
    return batch


def time_calls(fn, repeats: int, warmup: int = 1, device: torch.device | str | None = None,
               before=None) -> list[float]:
    """Seconds per fn() call. On a CUDA ``device``: GPU time between CUDA events recorded around
    each call (the host does not wait in between); elsewhere wall time. ``before()`` runs ahead of
    each timed call, outside the timing (e.g. an L2 flush)."""
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50 / p95 / max in milliseconds (None for no samples)."""
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None, "n": 0}
    xs = sorted(seconds)
    pick = lambda q: xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1e3  # noqa: E731 - nearest rank
    return {"p50_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": xs[-1] * 1e3, "n": len(xs)}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def threads() -> str:
    return f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"


def ros_isolation() -> None:
    """Localhost-only DDS and a domain of our own, before rclpy is imported (as `make bench` does)."""
    import random

    if "rclpy" in sys.modules:
        raise RuntimeError("set the ROS environment before importing rclpy")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if os.environ.get("BITVLA_TEST_ENV") != "1":  # not started by `make bench`: pick our own domain
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 101))


def random_model_folder(directory: Path, seed: int = 0, config: BitVLAConfig | None = None) -> Path:
    """A packed BitVLA folder (random weights, a tokenizer, statistics) for node benchmarks: the
    tiny model, or with ``config`` (e.g. bitvla_3b()) that size built directly in deploy form
    (random packed codes, no float weight) at its own vocabulary size."""
    import numpy as np

    from bitvla_ros.model.checkpoint import save_packed
    from bitvla_ros.model.config import tiny, with_vocab
    from bitvla_ros.model.tokenizer import SYSTEM_PROMPT, build_tokenizer, save_tokenizer, token_ids, vocab_size

    texts = ["put the bowl on the stove", "open the drawer"]
    if config is None:
        tok = build_tokenizer(texts, vocab_size=300)
        torch.manual_seed(seed)
        model = BitVLA(with_vocab(tiny(), vocab_size(tok), token_ids(tok))).to_deploy("reference")
    else:  # the system prompt learnt too: about the published prompt's token count (~640 vs 626)
        tok = build_tokenizer([SYSTEM_PROMPT, "User: ", "Assistant: ", *texts], vocab_size=1000)
        model = random_deploy_model(with_vocab(config, config.text.vocab_size, token_ids(tok)), seed=seed)
    stat = lambda n: {k: v.tolist() for k, v in {"mean": np.zeros(n), "std": np.ones(n), "min": -np.ones(n),  # noqa: E731
                                                  "max": np.ones(n), "q01": -np.ones(n), "q99": np.ones(n)}.items()}
    stats = {"bench": {"action": stat(7) | {"mask": [True] * 6 + [False]}, "proprio": stat(8),
                       "num_transitions": 1, "num_trajectories": 1}}
    save_packed(model, directory, stats=stats)
    save_tokenizer(tok, directory)
    return directory
