"""Training checkpoints: master weights in the published layout plus the trainer's state, so a
run resumes exactly where it stopped (`--resume`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.checkpoint import load_published, save_published

_STEP_DIR = re.compile(r"step_(\d+)$")
STATE_FILE = "trainer_state.pt"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / "checkpoints"
    done = [d for d in root.glob("step_*") if _STEP_DIR.search(d.name) and (d / STATE_FILE).is_file()]
    return max(done, key=lambda d: int(_STEP_DIR.search(d.name).group(1)), default=None)


def save_checkpoint(run_dir: Path, step: int, model: BitVLA, optimizer, stats: dict, tokenizer_dir: Path,
                    keep: int = 2) -> Path:
    """Written to a temp folder, then renamed: a crash never leaves a half checkpoint behind. The
    latest ``keep`` checkpoints stay (0: all)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_published(model, tmp, step=step, stats=stats, tokenizer_dir=tokenizer_dir)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
               tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    old = sorted((d for d in final.parent.glob("step_*") if _STEP_DIR.search(d.name)), key=lambda d: d.name)
    for d in old[:-keep] if keep > 0 else []:
        shutil.rmtree(d, ignore_errors=True)
    return final


def load_checkpoint(path: Path, optimizer_factory, dtype=torch.float32):
    """(model, optimizer, step) from a checkpoint folder."""
    model = load_published(path, dtype=dtype)
    model.train()
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer = optimizer_factory(model)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return model, optimizer, int(state["step"])


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def rewind_metrics(run_dir: Path, step: int) -> float:
    """On resume from `step`: drop the records a killed run wrote after its last checkpoint (they
    would be logged twice), and return the training seconds spent up to `step`, so that elapsed_s
    keeps counting across resumes."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return max((r["elapsed_s"] for r in kept if "elapsed_s" in r), default=0.0)


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
