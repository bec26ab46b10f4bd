"""What int8 heads (`bitvla convert --heads int8`) do to a trained model's actions.

Loads a model folder twice, as stored (bf16 heads) and converted to int8 heads, runs both on the
same recorded frames of a dataset (real observations: the cameras, the instruction and the state
at that frame) and prints, in normalized action units (the head's output, about [-1, 1]):
  - how far the int8 actions are from the bf16 ones (mean, 99th percentile, max);
  - each model's L1 distance to the expert's recorded actions, for scale;
  - gripper commands that flip (open <-> close, as the env reads them);
  - the model file's size both ways.

    .venv/bin/python bench/int8_heads.py --dataset data/goal_clean [--model models/bitvla-libero-goal-demo]
        [--frames 200] [--backend cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_frames(dataset, count: int, seed: int = 0) -> list[tuple[int, int]]:
    """(episode, frame) pairs spread over the episodes, each with a whole chunk of labels after it."""
    rng = np.random.default_rng(seed)
    episodes = [e for e in dataset.episodes]
    picks = []
    for i in range(count):
        ep = episodes[i % len(episodes)]
        picks.append((ep.index, int(rng.integers(0, max(1, ep.length - 8)))))
    return picks


def main() -> None:
    from tqdm import tqdm

    from bitvla_ros.data.reader import EpisodeDataset
    from bitvla_ros.kernels.autotune import cpu_model, isa_flags
    from bitvla_ros.model.checkpoint import convert
    from bitvla_ros.model.predict import BitVLAPredictor
    from bitvla_ros.model.runtime import RuntimeSettings
    from bitvla_ros.sim.gripper import model_to_env_gripper

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models/bitvla-libero-goal-demo"))
    p.add_argument("--dataset", required=True, help="a recorded dataset of the model's task (bitvla record)")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--backend", default="cpu")
    args = p.parse_args()

    dataset = EpisodeDataset(args.dataset)
    with tempfile.TemporaryDirectory(prefix="bitvla-int8-heads-") as tmp:
        int8_dir = Path(tmp) / "int8"
        convert(args.model, int8_dir, heads="int8")
        bf16 = BitVLAPredictor.from_pretrained(args.model, backend=args.backend, device="cpu")
        int8 = BitVLAPredictor.from_pretrained(int8_dir, backend=args.backend, device="cpu")
        sizes = [(Path(d) / "model.safetensors").stat().st_size / 1e6 for d in (args.model, int8_dir)]
        cameras = RuntimeSettings.load(args.model).camera_names or dataset.camera_names
        chunk = bf16.model.config.action_chunk
        diffs, err_bf16, err_int8, flips, grippers = [], [], [], 0, 0
        cache: dict[int, object] = {}
        for ep, t in tqdm(sample_frames(dataset, args.frames), desc="frames", unit="frame"):
            frames = cache.setdefault(ep, dataset.frames(ep))
            images = [frames.image(c, t) for c in cameras]
            a = bf16.predict(images, frames.task, frames.state[t]).normalized
            b = int8.predict(images, frames.task, frames.state[t]).normalized
            label = bf16.stats.normalize_actions(frames.action[t:t + chunk])
            n = len(label)
            diffs.append(np.abs(a - b).ravel())
            err_bf16.append(np.abs(a[:n] - label).mean())
            err_int8.append(np.abs(b[:n] - label).mean())
            flips += sum(model_to_env_gripper(x) != model_to_env_gripper(y) for x, y in zip(a[:, -1], b[:, -1]))
            grippers += a.shape[0]
    d = np.concatenate(diffs)
    torch_threads = torch.get_num_threads()
    print(f"\nmodel {args.model}; dataset {args.dataset}: {len(err_bf16)} frames x {chunk} steps")
    print(f"CPU: {cpu_model()} ({', '.join(isa_flags())}), {torch_threads} threads, backend {args.backend}")
    print(f"model.safetensors: {sizes[0]:.2f} MB with bf16 heads -> {sizes[1]:.2f} MB with int8 heads")
    print(f"|int8 - bf16| (normalized units): mean {d.mean():.2e}, p99 {np.percentile(d, 99):.2e}, max {d.max():.2e}")
    print(f"L1 to the expert's actions: bf16 heads {np.mean(err_bf16):.4f}, int8 heads {np.mean(err_int8):.4f}")
    print(f"gripper commands flipped (open <-> close): {flips} of {grippers}")


if __name__ == "__main__":
    main()
