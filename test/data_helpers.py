"""Shared pieces of the dataset tests: deterministic episodes, a small writer, meta checks.

Run as a script it is the crash child: `python data_helpers.py MODE ROOT [LAYOUT]` writes two
episodes, starts a third and pauses at the point MODE names (printing PAUSED), waiting to be killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitvla_ros.data import DatasetWriter, DatasetWriterV21, rebuild_meta  # noqa: E402

CAMERAS = ["agentview", "wrist"]
STATE_NAMES = [f"joint{i}" for i in range(7)] + ["gripper_pos"]
ACTION_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
H, W = 32, 40
FPS = 10
MASK = [True] * 6 + [False]


def episode(seed: int, length: int) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """Frames (images, state, action): smooth images (so JPEG is close), random state and action."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for t in range(length):
        images = {}
        for c, cam in enumerate(CAMERAS):
            base = np.stack([xx * 5 + t * 3, yy * 6 + c * 40, (xx + yy) * 3 + seed * 7], -1)
            images[cam] = (base % 256).astype(np.uint8)
        action = rng.normal(size=7)
        action[6] = float(rng.integers(0, 2))  # a 0/1 gripper
        frames.append((images, rng.normal(size=8), action))
    return frames


def no_space(where=lambda dst: True):
    """An os.replace that fails with ENOSPC for the destinations ``where`` picks."""
    import errno
    real = os.replace

    def replace(src, dst):
        if where(str(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    return replace


def make_writer(root, layout: str = "v2.1", **kw):
    """A small writer: v2.1 (DatasetWriterV21, PNG images) or v3.0 (DatasetWriter; video unless video=False)."""
    args = dict(fps=FPS, camera_names=CAMERAS, state_names=STATE_NAMES, action_names=ACTION_NAMES,
                robot_type="panda", image_format="png", action_mask=MASK, dataset_name="toy_no_noops")
    cls = DatasetWriterV21 if layout == "v2.1" else DatasetWriter
    return cls(root, **{**args, **kw})


def record(writer: DatasetWriter, seed: int, length: int, task: str | None = None) -> int:
    writer.start_episode(task or f"task {seed % 2}")
    for images, state, action in episode(seed, length):
        writer.add_frame(images, state, action)
    return writer.save_episode()


def assert_episode_equal(dataset, index: int, seed: int, length: int, tolerance: float = 0.0) -> None:
    """Episode ``index`` holds episode(seed, length): exact vectors and times, images within
    ``tolerance`` levels of mean difference (0: exact)."""
    frames = dataset.frames(index)
    expected = episode(seed, length)
    assert len(frames) == length
    np.testing.assert_array_equal(frames.state, np.stack([s for _, s, _ in expected]).astype(np.float32))
    np.testing.assert_array_equal(frames.action, np.stack([a for _, _, a in expected]).astype(np.float32))
    np.testing.assert_allclose(frames.timestamp, np.arange(length) / FPS, rtol=1e-6)
    for t in (0, length - 1):
        for cam in CAMERAS:
            diff = np.abs(frames.image(cam, t).astype(int) - expected[t][0][cam])
            assert diff.mean() <= tolerance, (cam, t, diff.mean())


def meta_snapshot(root: Path) -> dict[str, str]:
    root = Path(root)
    files = sorted([*root.glob("meta/*"), root / "dataset_statistics.json"])
    return {str(p.relative_to(root)): p.read_text() for p in files if p.is_file()}


def assert_consistent(root: Path) -> dict:
    """Meta agrees with itself and is exactly what a rebuild from the episode files gives; returns info."""
    root = Path(root)
    info = json.loads((root / "meta/info.json").read_text())
    episodes = [json.loads(x) for x in (root / "meta/episodes.jsonl").read_text().splitlines()]
    files = sorted(root.glob("data/*/*.parquet"))
    assert info["total_episodes"] == len(episodes) == len(files)
    assert info["total_frames"] == sum(e["length"] for e in episodes)
    assert not list(root.rglob("*.partial"))
    before = meta_snapshot(root)
    rebuild_meta(root)
    assert meta_snapshot(root) == before
    return info


def kill_at(mode: str, root: Path, layout: str = "v2.1") -> None:
    """Run the crash child (below) until it pauses at MODE, then kill -9 it."""
    import signal
    import subprocess

    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), mode, str(root), layout],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line == "PAUSED\n", f"the child did not reach its pause: {line!r} {child.stderr.read()}"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def _pause() -> None:
    print("PAUSED", flush=True)
    time.sleep(60)


def _crash_child(mode: str, root: str, layout: str = "v2.1") -> None:
    writer = make_writer(root, layout)
    record(writer, 0, 9)
    record(writer, 1, 10)
    writer.start_episode("task 2")
    frames = episode(2, 11)
    for images, state, action in frames[:5]:
        writer.add_frame(images, state, action)
    if mode == "add_frame":
        import bitvla_ros.data.video as video
        import bitvla_ros.data.writer as w
        calls = []

        def then_pause(real):
            def call(*args, **kwargs):  # the first camera stored, the second not
                calls.append(1)
                if len(calls) == 2:
                    _pause()
                return real(*args, **kwargs)
            return call

        w.encode_image = then_pause(w.encode_image)
        video.ClipEncoder.add = then_pause(video.ClipEncoder.add)
        writer.add_frame(*frames[5])
        return
    for images, state, action in frames[5:]:
        writer.add_frame(images, state, action)
    real_replace = os.replace
    data = "episode_000002.parquet" if layout == "v2.1" else "file-000.parquet"
    episodes = "episodes.jsonl" if layout == "v2.1" else "file-000.parquet"

    def replace(src, dst):
        dst = Path(dst)
        name = dst.name if layout == "v2.1" else f"{dst.parent.parent.name}/{dst.name}"
        is_data = name in (data, f"data/{data}")
        is_episodes = name in (episodes, f"episodes/{episodes}")
        if mode == "before_data" and is_data:
            _pause()
        real_replace(src, dst)
        if (mode == "after_data" and is_data) or (mode == "after_episodes" and is_episodes):
            _pause()

    os.replace = replace
    writer.save_episode()


if __name__ == "__main__":
    _crash_child(*sys.argv[1:])
    sys.exit("the child was not stopped where it should pause")
