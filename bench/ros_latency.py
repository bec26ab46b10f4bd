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
        [--backend auto] [--device auto]

``measure()`` is one such run as a function (bench/gpu_stages/node.py calls it on a GPU); it also
reports the node's host RSS peak and, where nvidia-smi sees the process, its GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import random_model_folder, ros_isolation

def cpu_description() -> str:
    from bitvla_ros.kernels.autotune import cpu_model, isa_flags

    return f"{cpu_model()} ({os.cpu_count()} CPUs; {' '.join(isa_flags()) or 'no SIMD flags'})"


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _gpu_mb(pid: int) -> float | None:
    """GPU memory nvidia-smi shows for ``pid`` (CUDA context included), or None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid):
            return float(fields[1])
    return None


def percentiles(values, scale=1e3) -> str:
    if len(values) == 0:
        return "-"
    v = np.asarray(values) * scale
    return f"{np.percentile(v, 50):.1f} / {np.percentile(v, 95):.1f} / {v.max():.1f}"


def measure(model: str | None = None, backend: str = "auto", device: str = "auto", seconds: float = 20.0,
            camera_hz: float = 30.0, joint_hz: float = 100.0, image_size: int = 224, policy_threads: int = 0,
            executor: str = "single_threaded", control_rate: float = 0.0, execute_steps: int = 0,
            prefetch_steps: int = 0, command_type: str = "joint_trajectory", load_timeout_s: float = 180.0,
            workdir: Path | None = None, log=print) -> dict:
    """Run policy_node on ``model`` (default: a tiny random one) for ``seconds`` after its first chunk."""
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from bitvla_ros.ros.conversions import rgb_to_image

    workdir = Path(workdir or tempfile.mkdtemp(prefix="bitvla-latency-"))
    model = model or str(random_model_folder(workdir / "model"))
    stream = command_type == "float64_multiarray"
    params = {"bitvla_policy": {"ros__parameters": {
        "model_path": model, "backend": backend, "device": device, "image_topics": ["cam0", "cam1"],
        "proprio_names": [f"p{i}" for i in range(8)], "action_names": [f"a{i}" for i in range(7)],
        "start_enabled": True, "max_observation_age_s": 5.0, "diagnostics_rate_hz": 2.0,
        "num_threads": policy_threads, "executor": executor, "stamp_mode": "observation",
        "control_rate_hz": control_rate, "execute_steps": execute_steps,
        "prefetch_steps": prefetch_steps, "command_type": command_type}}}
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
    rgb = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    frame = rgb_to_image(Image(), rgb)

    def publish_cameras():
        frame.header.stamp = clock.now().to_msg()
        for pub in cams:
            pub.publish(frame)

    def publish_joints():
        js = JointState(name=[f"p{i}" for i in range(8)], position=[0.0] * 8)
        js.header.stamp = clock.now().to_msg()
        joints.publish(js)

    node.create_timer(1.0 / camera_hz, publish_cameras)
    node.create_timer(1.0 / joint_hz, publish_joints)
    gpu_peak, first_chunk_s, first, rss_hwm_kb = None, None, [], None
    try:
        start = time.monotonic()
        while time.monotonic() - start < load_timeout_s and not arrivals and node_proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.02)  # model load and warm-up
        first_chunk_s, first = (time.monotonic() - start if arrivals else None), latencies[:1]
        spin_until = time.monotonic() + 2.0  # settle
        while arrivals and time.monotonic() < spin_until:
            rclpy.spin_once(node, timeout_sec=0.02)
        latencies.clear()
        arrivals.clear()
        stamps.clear()
        cpu0, start, sampled = process_cpu_s(node_proc.pid), time.monotonic(), 0.0
        while first_chunk_s is not None and time.monotonic() - start < seconds:
            rclpy.spin_once(node, timeout_sec=0.02)
            if time.monotonic() - sampled >= 1.0:
                sampled, mb = time.monotonic(), _gpu_mb(node_proc.pid)
                gpu_peak = mb if gpu_peak is None or (mb is not None and mb > gpu_peak) else gpu_peak
        wall, cpu = time.monotonic() - start, process_cpu_s(node_proc.pid) - cpu0
        rss_hwm_kb = _status_kb(node_proc.pid, "VmHWM")
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
        log_path = workdir / f"node_{executor}.log"
        raise RuntimeError(f"no command arrived; node log {log_path}:\n{log_path.read_text()[-3000:]}")
    period = 1.0 / float(diag.get("control_rate_hz") or control_rate or 20.0)
    execute = int(diag.get("execute_steps") or execute_steps or 8)
    requested = 1.0 / ((execute - prefetch_steps) * period)
    chunks = int(diag.get("chunks_published", 0)) if stream else len(arrivals)
    f = lambda k: float(diag[k]) * 1e3 if diag.get(k) else float("nan")  # noqa: E731
    ms = np.array(latencies) * 1e3
    return {
        "model": model, "image_size": image_size, "camera_hz": camera_hz, "joint_hz": joint_hz,
        "first_chunk_after_start_s": first_chunk_s,
        "first_chunk_e2e_ms": first[0] * 1e3 if first else None,  # a new prompt length is captured here on a GPU
        "e2e_p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "e2e_max_ms": float(ms.max()) if len(ms) else None,
        "inference_p50_ms": f("latency_p50_s"), "inference_p95_ms": f("latency_p95_s"),
        "host_rss_peak_mb": None if rss_hwm_kb is None else rss_hwm_kb / 1024,
        "gpu_memory_peak_mb_nvidia_smi": gpu_peak,
        **{k: diag.get(k) for k in ("device", "forward", "device_reason", "backend_reason")},
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
    p.add_argument("--device", default="auto")
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
    model = args.model or str(random_model_folder(tmp / "model"))
    rows = [measure(model, args.backend, args.device, args.seconds, args.camera_hz, args.joint_hz, args.image_size,
                    args.policy_threads, name, args.control_rate, args.execute_steps, args.prefetch_steps,
                    args.command_type, workdir=tmp) for name in args.executors.split(",")]
    print(f"policy_node over DDS: {'tiny random model' if not args.model else args.model}, two {args.image_size}px "
          f"cameras at {args.camera_hz:.0f} Hz, joint states at {args.joint_hz:.0f} Hz, {args.command_type}, "
          f"backend {rows[0]['backend']}, device {rows[0]['device']}")
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
