"""policy_node over real DDS: does it keep its control rate, and how late is each chunk?

Starts policy_node in its own process on a tiny random BitVLA (or --model), publishes two cameras
(--camera-hz, default 30) and joint states (--joint-hz, default 100) stamped with the current time,
and measures, per executor given in --executors (one after the other, in this run):
- the achieved chunk rate against the requested one (control_rate_hz / (execute_steps - prefetch_steps));
- the control-tick interval p50 / p95 / max (the node's own timer, from /diagnostics; with
  --command-type float64_multiarray also the interval between streamed commands as received);
- end to end, observation stamp -> JointTrajectory received (the node runs with
  stamp_mode: observation, so the header carries the observation's stamp), against the node's own
  inference time (preprocessing + forward) from /diagnostics;
- the node process's CPU use.
It prints the CPU model, its ISA and the thread counts, so runs on different machines compare.

    .venv/bin/python bench/ros_latency.py [--seconds 20] [--executors single_threaded,multi_threaded]
        [--model DIR] [--image-size 224] [--policy-threads N] [--execute-steps 8] [--prefetch-steps 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ros_isolation, tiny_model_folder

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_description() -> str:
    model, flags = platform.processor() or "?", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"
    return f"{model} ({os.cpu_count()} CPUs; {isa})"


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values, scale=1e3) -> str:
    if len(values) == 0:
        return "-"
    v = np.asarray(values) * scale
    return f"{np.percentile(v, 50):.1f} / {np.percentile(v, 95):.1f} / {v.max():.1f}"


def run_once(args, model: str, executor: str, workdir: Path) -> dict:
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from bitvla_ros.ros.conversions import rgb_to_image

    stream = args.command_type == "float64_multiarray"
    params = {"bitvla_policy": {"ros__parameters": {
        "model_path": model, "backend": args.backend, "image_topics": ["cam0", "cam1"],
        "proprio_names": [f"p{i}" for i in range(8)], "action_names": [f"a{i}" for i in range(7)],
        "start_enabled": True, "max_observation_age_s": 5.0, "diagnostics_rate_hz": 2.0,
        "num_threads": args.policy_threads, "executor": executor, "stamp_mode": "observation",
        "control_rate_hz": args.control_rate, "execute_steps": args.execute_steps,
        "prefetch_steps": args.prefetch_steps, "command_type": args.command_type}}}
    (workdir / f"params_{executor}.yaml").write_text(yaml.safe_dump(params))
    log = open(workdir / f"node_{executor}.log", "w")
    node_proc = subprocess.Popen([sys.executable, "-m", "bitvla_ros.ros.policy_node", "--ros-args",
                                  "--params-file", str(workdir / f"params_{executor}.yaml")],
                                 stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("latency_bench")
    latencies, arrivals, stamps, diag = [], [], [], {}
    clock = node.get_clock()
    now = lambda: clock.now().nanoseconds * 1e-9  # noqa: E731

    def on_command(msg):
        arrivals.append(now())
        if not stream:
            stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
            latencies.append(arrivals[-1] - stamps[-1])

    def on_diag(msg):
        for s in msg.status:
            if s.name == "bitvla_policy":
                diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(Float64MultiArray if stream else JointTrajectory, "joint_command", on_command, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    cams = [node.create_publisher(Image, f"cam{i}", qos_profile_sensor_data) for i in range(2)]
    joints = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(String, "instruction", latched).publish(String(data="put the bowl on the stove"))
    rgb = np.random.default_rng(0).integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
    frame = rgb_to_image(Image(), rgb)

    def publish_cameras():
        frame.header.stamp = clock.now().to_msg()
        for pub in cams:
            pub.publish(frame)

    def publish_joints():
        js = JointState(name=[f"p{i}" for i in range(8)], position=[0.0] * 8)
        js.header.stamp = clock.now().to_msg()
        joints.publish(js)

    node.create_timer(1.0 / args.camera_hz, publish_cameras)
    node.create_timer(1.0 / args.joint_hz, publish_joints)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 180 and not arrivals:  # model load and warm-up
            rclpy.spin_once(node, timeout_sec=0.02)
        spin_until = time.monotonic() + 2.0  # settle
        while time.monotonic() < spin_until:
            rclpy.spin_once(node, timeout_sec=0.02)
        latencies.clear()
        arrivals.clear()
        stamps.clear()
        cpu0, start = process_cpu_s(node_proc.pid), time.monotonic()
        while time.monotonic() - start < args.seconds:
            rclpy.spin_once(node, timeout_sec=0.02)
        wall, cpu = time.monotonic() - start, process_cpu_s(node_proc.pid) - cpu0
        window = {"arrivals": list(arrivals), "latencies": list(latencies), "stamps": list(stamps)}
        final = time.monotonic() + 1.5  # one more diagnostics status covering the window
        while time.monotonic() < final:
            rclpy.spin_once(node, timeout_sec=0.02)
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    arrivals, latencies, stamps = window["arrivals"], window["latencies"], window["stamps"]
    if not arrivals:
        raise SystemExit(f"no command arrived; node log: {workdir / f'node_{executor}.log'}")
    period = 1.0 / float(diag.get("control_rate_hz") or args.control_rate or 20.0)
    execute = int(diag.get("execute_steps") or args.execute_steps or 8)
    requested = 1.0 / ((execute - args.prefetch_steps) * period)
    chunks = int(diag.get("chunks_published", 0)) if stream else len(arrivals)
    f = lambda k: float(diag[k]) * 1e3 if diag.get(k) else float("nan")  # noqa: E731
    return {
        "executor": executor, "seconds": wall, "chunks": len(arrivals) if not stream else None,
        "achieved_chunks_per_s": (len(arrivals) / wall) if not stream else None,
        "requested_chunks_per_s": requested,
        "tick_ms_p50_p95_max": (f("tick_interval_p50_s"), f("tick_interval_p95_s"), f("tick_interval_max_s")),
        "stream_interval_ms": percentiles(np.diff(arrivals)) if stream else None,
        "e2e_ms": percentiles(latencies) if latencies else None,
        "observation_interval_ms": percentiles(np.diff(stamps)) if len(stamps) > 1 else None,
        "e2e_p95_ms": float(np.percentile(np.array(latencies) * 1e3, 95)) if latencies else None,
        "inference_ms_p50_p95": (f("latency_p50_s"), f("latency_p95_s")),
        "node_cpu_percent": 100.0 * cpu / wall, "dropped_late_actions": diag.get("dropped_late_actions"),
        "backend": diag.get("backend", "?"), "chunks_counted_by_node": chunks,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--joint-hz", type=float, default=100.0)
    p.add_argument("--executors", default="single_threaded", help="comma-separated: single_threaded, "
                   "multi_threaded (each measured in turn)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--model", help="model folder (default: a tiny random model)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--policy-threads", type=int, default=0, help="policy_node num_threads (0 = one per core)")
    p.add_argument("--control-rate", type=float, default=0.0, help="control_rate_hz (0 = the model's, else 20)")
    p.add_argument("--execute-steps", type=int, default=0, help="execute_steps (0 = the model's, else 8)")
    p.add_argument("--prefetch-steps", type=int, default=0)
    p.add_argument("--command-type", default="joint_trajectory", choices=("joint_trajectory", "float64_multiarray"))
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    ros_isolation()
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="bitvla-latency-"))
    model = args.model or str(tiny_model_folder(tmp / "model"))
    rows = [run_once(args, model, name, tmp) for name in args.executors.split(",")]
    print(f"policy_node over DDS: {'tiny random model' if not args.model else args.model}, two {args.image_size}px "
          f"cameras at {args.camera_hz:.0f} Hz, joint states at {args.joint_hz:.0f} Hz, {args.command_type}, "
          f"backend {rows[0]['backend']}")
    print(f"CPU: {cpu_description()}; node torch threads {args.policy_threads or torch.get_num_threads()}")
    for r in rows:
        tick = "/".join(f"{v:.1f}" for v in r["tick_ms_p50_p95_max"])
        inf = "/".join(f"{v:.1f}" for v in r["inference_ms_p50_p95"])
        if r["achieved_chunks_per_s"] is not None:
            rate = (f"{r['achieved_chunks_per_s']:.2f}/s of {r['requested_chunks_per_s']:.2f}/s requested "
                    f"({100 * r['achieved_chunks_per_s'] / r['requested_chunks_per_s']:.1f} %, {r['chunks']} chunks)")
        else:
            rate = f"stream intervals p50/p95/max {r['stream_interval_ms']} ms"
        print(f"  {r['executor']:>15}: chunks {rate}; tick p50/p95/max {tick} ms; "
              f"e2e p50/p95/max {r['e2e_ms'] or '-'} ms; inference p50/p95 {inf} ms; "
              f"node CPU {r['node_cpu_percent']:.0f} %; late actions dropped {r['dropped_late_actions']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "args": vars(args), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
