"""Camera frames as video vs as images in parquet: size on disk and training read speed, for the
same episodes; and `bitvla import-bag` speed on a bag made from them.

    .venv/bin/python bench/dataset_formats.py DATASET [--samples 400] [--repeats 3] [--bag]

DATASET is any dataset the reader reads (e.g. `bitvla record` output). Its episodes are written
again, in a temp folder, as LeRobot v3.0 with video (H.264, the recorder's default) and with JPEG
images in the parquet files (q95, the v2.1 recorder's default), from the same decoded frames. Read
speed is what training does per sample (ChunkedSamples[i]: decoded images of every camera, state,
action chunk), in a shuffled order: from a fresh reader (the first epoch), and again after one
pass over every sample (later epochs, with the readers' caches warm); medians of the repeats, and
the ratios within this run. --bag also writes the episodes as an MCAP bag (raw rgb8
Image messages, JointState, JointTrajectory commands stamped like their observations) and imports
it in action mode, reporting frames per second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitvla_ros.data import EpisodeDataset  # noqa: E402
from bitvla_ros.data.samples import ChunkedSamples  # noqa: E402
from bitvla_ros.data.tools import convert  # noqa: E402


def size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def read_speed(root: Path, samples: int, seed: int) -> tuple[float, float]:
    """Samples per second, shuffled: from a fresh reader (caches empty: the first epoch), and from
    the same reader after one pass over every sample (later epochs)."""
    data = ChunkedSamples(EpisodeDataset(root), chunk=8)
    rng = np.random.default_rng(seed)

    def timed(order) -> float:
        start = time.perf_counter()
        for i in order:
            data[int(i)]
        return len(order) / (time.perf_counter() - start)

    first = timed(rng.integers(0, len(data), samples))
    for i in range(len(data)):
        data[i]
    return first, timed(rng.integers(0, len(data), samples))


def bag_import_speed(source: EpisodeDataset, work: Path) -> str:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from bitvla_ros.ros.bag_import import import_bags

    ts = get_typestore(Stores.LATEST)
    T = ts.types
    bag_path = work / "bag"
    w = Writer(bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conns = {cam: w.add_connection(f"/{cam}/image_raw", "sensor_msgs/msg/Image", typestore=ts)
             for cam in source.camera_names}
    conns["joints"] = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
    conns["action"] = w.add_connection("/teleop/joint_command", "trajectory_msgs/msg/JointTrajectory", typestore=ts)
    conns["episode"] = w.add_connection("/episode", "std_msgs/msg/String", typestore=ts)
    conns["instruction"] = w.add_connection("/instruction", "std_msgs/msg/String", typestore=ts)

    def write(key, t, msg):
        w.write(conns[key], int(t * 1e9), ts.serialize_cdr(msg, conns[key].msgtype))

    def header(t):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=int(t), nanosec=int((t % 1) * 1e9)),
                                        frame_id="")

    t, frames_in = 1.0, 0
    for e in source.episodes:
        f = source.frames(e.index)
        write("instruction", t, T["std_msgs/msg/String"](data=e.task))
        write("episode", t + 0.001, T["std_msgs/msg/String"](data="start"))
        for k in range(len(f)):
            t += 1.0 / source.fps
            for cam in source.camera_names:
                rgb = f.image(cam, k)
                write(cam, t + 0.001, T["sensor_msgs/msg/Image"](header=header(t), height=rgb.shape[0],
                                                                 width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                                                                 step=rgb.shape[1] * 3, data=rgb.reshape(-1).copy()))
            write("joints", t + 0.002, T["sensor_msgs/msg/JointState"](
                header=header(t), name=list(source.state_names), position=f.state[k].astype(np.float64),
                velocity=np.zeros(0), effort=np.zeros(0)))
            point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=f.action[k].astype(np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
                effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
            write("action", t + 0.003, T["trajectory_msgs/msg/JointTrajectory"](
                header=header(t), joint_names=list(source.action_names), points=[point]))
            frames_in += 1
        t += 0.05
        write("episode", t, T["std_msgs/msg/String"](data="stop"))
        t += 1.0
    w.close()
    params = {"dataset_dir": str(work / "imported"), "image_topics": [f"{c}/image_raw" for c in source.camera_names],
              "proprio_names": source.state_names, "action_names": source.action_names, "sample_mode": "action",
              "record_rate_hz": float(source.fps), "episode_topic": "episode"}
    result = import_bags([bag_path], params, split="topic", log=lambda *a: None)
    imported = EpisodeDataset(work / "imported")
    same = all(np.array_equal(imported.frames(e.index).action, source.frames(e.index).action) for e in source.episodes)
    return (f"import-bag: {result.frames} of {frames_in} frames ({len(result.episodes)} episodes, "
            f"{result.messages} messages, bag {size_mb(bag_path):.1f} MB MCAP) in {result.seconds:.1f} s = "
            f"{result.frames / result.seconds:.0f} frames/s; actions identical to the source: {same}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bag", action="store_true", help="also measure bitvla import-bag")
    a = p.parse_args()
    source = EpisodeDataset(a.dataset)
    shape = {c: source.features[f"observation.images.{c}"]["shape"] for c in source.camera_names}
    print(f"source: {a.dataset} ({source.version}), {len(source)} episodes, {source.num_frames} frames, cameras {shape}")
    work = Path(tempfile.mkdtemp(prefix="bitvla_bench_"))
    try:
        layouts = {"video (H.264 crf 23, gop 2)": work / "video", "images in parquet (JPEG q95)": work / "images"}
        for (name, root), video in zip(layouts.items(), (True, False)):
            start = time.perf_counter()
            convert(a.dataset, root, video=video, log=lambda *x: None, image_format="jpeg")
            print(f"  wrote {name}: {size_mb(root):.2f} MB on disk ({time.perf_counter() - start:.1f} s to write)")
        speeds = {name: [] for name in layouts}
        for r in range(a.repeats):  # interleaved, so that load on the machine hits both alike
            for name, root in layouts.items():
                speeds[name].append(read_speed(root, a.samples, seed=r))
        sizes = {name: size_mb(root) for name, root in layouts.items()}
        vname, iname = layouts
        med = {name: [statistics.median(s[k] for s in speeds[name]) for k in (0, 1)] for name in layouts}
        for name in layouts:
            print(f"  {name}: {sizes[name]:.2f} MB; training reads {med[name][0]:.0f} samples/s in the first epoch, "
                  f"{med[name][1]:.0f} in later ones (medians of {a.repeats})")
        print(f"  video / images: size {sizes[vname] / sizes[iname]:.3f}x, read speed "
              f"{med[vname][0] / med[iname][0]:.2f}x in the first epoch, {med[vname][1] / med[iname][1]:.2f}x later")
        if a.bag:
            print("  " + bag_import_speed(source, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
