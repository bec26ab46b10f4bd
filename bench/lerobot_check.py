"""Open a dataset written by this package with LeRobot itself, and compare what LeRobot reads with
what our reader reads.

LeRobot lives in a venv of its own (it pins its own torch; LeRobot >= 0.5 needs Python >= 3.12),
so the check has two halves, run in turn (docs/datasets.md says how to make that venv):

    # 1. in this package's venv: our reader's view of the dataset (counts, features, some frames)
    .venv/bin/python bench/lerobot_check.py reference DATASET /tmp/ref.npz
    # 2. in LeRobot's venv: LeRobotDataset(repo_id, root=DATASET), compared with /tmp/ref.npz
    HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python bench/lerobot_check.py check DATASET /tmp/ref.npz

Step 2 prints what LeRobot saw and every difference, and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

IMAGE_TOLERANCE = 1.0  # mean |difference| in 0..255 levels: both decode the same stream (ffmpeg's decoders)


def frames_to_check(lengths: list[int]) -> list[tuple[int, int]]:
    """(episode, frame) pairs: the first, a middle and the last frame of each episode."""
    return sorted({(e, t) for e, n in enumerate(lengths) for t in (0, n // 2, n - 1)})


def reference(root: str, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bitvla_ros.data import EpisodeDataset

    d = EpisodeDataset(root)
    lengths = [e.length for e in d.episodes]
    arrays, picks = {}, frames_to_check(lengths)
    for e, t in picks:
        f = d.frames(e)
        arrays[f"state_{e}_{t}"] = f.state[t]
        arrays[f"action_{e}_{t}"] = f.action[t]
        for cam in d.camera_names:
            arrays[f"image_{cam}_{e}_{t}"] = f.image(cam, t)
    meta = {"version": d.version, "episodes": len(d), "frames": d.num_frames, "fps": d.fps, "lengths": lengths,
            "tasks": [e.task for e in d.episodes], "cameras": d.camera_names, "picks": picks,
            "features": {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in d.features.items()}}
    np.savez(out, meta=json.dumps(meta), **arrays)
    print(f"our reader: {d.version}, {len(d)} episodes, {d.num_frames} frames, {len(picks)} frames saved to {out}")


def check(root: str, ref: str) -> int:
    import torch
    from lerobot.datasets import LeRobotDataset

    saved = np.load(ref)
    meta = json.loads(str(saved["meta"]))
    problems: list[str] = []

    def expect(what: str, ours, theirs) -> None:
        if ours != theirs:
            problems.append(f"{what}: ours {ours!r}, LeRobot {theirs!r}")

    start = time.perf_counter()
    ds = LeRobotDataset(f"local/{Path(root).name}", root=root)
    opened = time.perf_counter() - start
    import lerobot
    print(f"LeRobot {lerobot.__version__} (torch {torch.__version__}) opened {root} in {opened:.2f} s: "
          f"{ds.num_episodes} episodes, {ds.num_frames} frames at {ds.fps} fps; video backend {getattr(ds, 'video_backend', None) or getattr(ds, '_video_backend', '?')}")
    expect("episodes", meta["episodes"], ds.num_episodes)
    expect("frames", meta["frames"], ds.num_frames)
    expect("fps", meta["fps"], ds.fps)
    expect("episode lengths", meta["lengths"], [int(x) for x in ds.meta.episodes["length"]])
    for key, ft in meta["features"].items():
        theirs = ds.features.get(key)
        if theirs is None:
            problems.append(f"feature {key} is missing in LeRobot's view")
            continue
        expect(f"{key} dtype", ft["dtype"], theirs["dtype"])
        expect(f"{key} shape", tuple(ft["shape"]) if ft["shape"] else None, tuple(theirs["shape"]))
    print("  features:", ", ".join(f"{k} {v['dtype']} {tuple(v['shape'])}" for k, v in ds.features.items()))

    from_index = [int(x) for x in ds.meta.episodes["dataset_from_index"]]
    worst = 0.0
    start = time.perf_counter()
    for e, t in meta["picks"]:
        item = ds[from_index[e] + t]
        expect(f"episode of frame {e}/{t}", e, int(item["episode_index"]))
        expect(f"frame_index of {e}/{t}", t, int(item["frame_index"]))
        expect(f"task of episode {e}", meta["tasks"][e], item["task"])
        for key in ("state", "action"):
            theirs = item["observation.state" if key == "state" else "action"].numpy().reshape(-1)  # (1,): 0-d
            if not np.array_equal(saved[f"{key}_{e}_{t}"], theirs):
                problems.append(f"{key} of {e}/{t}: ours {saved[f'{key}_{e}_{t}']}, LeRobot {theirs}")
        for cam in meta["cameras"]:
            chw = item[f"observation.images.{cam}"]  # float CHW in [0, 1]
            theirs = (chw.permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
            ours = saved[f"image_{cam}_{e}_{t}"].astype(np.int16)
            if theirs.shape != ours.shape:
                problems.append(f"image {cam} {e}/{t}: ours {ours.shape}, LeRobot {theirs.shape}")
                continue
            diff = float(np.abs(theirs - ours).mean())
            worst = max(worst, diff)
            if diff > IMAGE_TOLERANCE:
                problems.append(f"image {cam} {e}/{t}: mean difference {diff:.2f} levels")
    read = time.perf_counter() - start
    print(f"  read {len(meta['picks'])} frames through LeRobotDataset.__getitem__ in {read:.2f} s; largest mean "
          f"image difference to our reader {worst:.3f} levels (of 255)")
    stats = ds.meta.stats or {}
    print("  stats.json:", ", ".join(f"{k} ({', '.join(sorted(v))})" for k, v in sorted(stats.items())))
    for key in ("action", "observation.state"):
        if key not in stats or "mean" not in stats[key]:
            problems.append(f"stats for {key} are missing")
    for cam in meta["cameras"]:
        mean = stats.get(f"observation.images.{cam}", {}).get("mean")
        if mean is None or np.asarray(mean).shape != (3, 1, 1):
            problems.append(f"image stats of {cam}: mean is {None if mean is None else np.asarray(mean).shape}, "
                            "expected shape (3, 1, 1)")
    for p in problems:
        print("  DIFFERENCE:", p)
    print("  result:", "LeRobot reads the dataset as we do" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["reference", "check"])
    p.add_argument("dataset")
    p.add_argument("npz", help="where step 1 writes our reader's view, and step 2 reads it")
    a = p.parse_args()
    if a.step == "reference":
        reference(a.dataset, a.npz)
        return 0
    return check(a.dataset, a.npz)


if __name__ == "__main__":
    sys.exit(main())
