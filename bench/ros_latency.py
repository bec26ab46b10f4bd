"""End-to-end latency of policy_node: image stamp → JointTrajectory received, over real DDS.

Starts policy_node in its own process on a tiny random BitVLA (or --model), publishes two cameras
and joint states at --rate Hz stamped with the current time, and measures, for every chunk that
arrives, now − header.stamp (the header carries the observation's stamp). Prints p50/p95/max and
the node's own inference latency from /diagnostics.

    .venv/bin/python bench/ros_latency.py [--seconds 30] [--backend auto] [--device auto] [--model DIR]
                                          [--policy-threads N]

``measure()`` is the same run as a function (bench/gpu_stages/node.py calls it on a GPU).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ros_isolation, random_model_folder


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


def measure(model: str | None = None, backend: str = "auto", device: str = "auto", seconds: float = 30.0,
            rate: float = 20.0, image_size: int = 224, policy_threads: int = 0, load_timeout_s: float = 120.0,
            log=print) -> dict:
    """Run policy_node on ``model`` (default: a tiny random one) fed at ``rate`` Hz for ``seconds``;
    the end-to-end latency per chunk, the node's own inference latency (/diagnostics), its host
    RSS peak and the GPU memory nvidia-smi shows for it (peak of samples once a second)."""
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from bitvla_ros.ros.conversions import rgb_to_image

    tmp = Path(tempfile.mkdtemp(prefix="bitvla-latency-"))
    model = model or str(random_model_folder(tmp / "model"))
    params = {"bitvla_policy": {"ros__parameters": {
        "model_path": model, "backend": backend, "device": device, "image_topics": ["cam0", "cam1"],
        "proprio_names": [f"p{i}" for i in range(8)], "action_names": [f"a{i}" for i in range(7)],
        "start_enabled": True, "max_observation_age_s": 5.0, "diagnostics_rate_hz": 2.0,
        "num_threads": policy_threads}}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    log_file = open(tmp / "node.log", "w")
    node_proc = subprocess.Popen([sys.executable, "-m", "bitvla_ros.ros.policy_node", "--ros-args",
                                  "--params-file", str(tmp / "params.yaml")], stdout=log_file, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("latency_bench")
    latencies, diag = [], {}
    clock = node.get_clock()

    def on_command(msg):
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append(clock.now().nanoseconds * 1e-9 - stamp)

    def on_diag(msg):
        for s in msg.status:
            if s.name == "bitvla_policy":
                diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(JointTrajectory, "joint_command", on_command, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    cams = [node.create_publisher(Image, f"cam{i}", qos_profile_sensor_data) for i in range(2)]
    joints = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(String, "instruction", latched).publish(String(data="put the bowl on the stove"))
    rgb = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)

    def publish():
        stamp = clock.now().to_msg()
        for pub in cams:
            msg = rgb_to_image(Image(), rgb)
            msg.header.stamp = stamp
            pub.publish(msg)
        js = JointState(name=[f"p{i}" for i in range(8)], position=[0.0] * 8)
        js.header.stamp = stamp
        joints.publish(js)

    node.create_timer(1.0 / rate, publish)
    gpu_peak, rss_hwm_kb, first_chunk_s, first = None, None, None, []
    try:
        start = time.monotonic()
        while time.monotonic() - start < load_timeout_s and not latencies and node_proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)  # model load (and, on a GPU, the warm-up capture)
        first_chunk_s = time.monotonic() - start if latencies else None
        first = latencies[:1]
        latencies.clear()  # the first chunk may include one-time work
        start, sampled = time.monotonic(), 0.0
        while first and time.monotonic() - start < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
            if time.monotonic() - sampled >= 1.0:
                sampled = time.monotonic()
                mb = _gpu_mb(node_proc.pid)
                gpu_peak = mb if gpu_peak is None or (mb is not None and mb > gpu_peak) else gpu_peak
        rss_hwm_kb = _status_kb(node_proc.pid, "VmHWM")
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        node.destroy_node()
        rclpy.shutdown()
        log_file.close()
    if not latencies:
        raise RuntimeError(f"no chunk arrived; node log {tmp / 'node.log'}:\n{(tmp / 'node.log').read_text()[-3000:]}")
    ms = np.array(latencies) * 1e3
    result = {"chunks": len(ms), "seconds": seconds, "rate_hz": rate, "image_size": image_size,
              "model": model, "first_chunk_after_start_s": first_chunk_s,
              "first_chunk_e2e_ms": first[0] * 1e3 if first else None,  # a new prompt length is captured here
              "e2e_p50_ms": float(np.percentile(ms, 50)), "e2e_p95_ms": float(np.percentile(ms, 95)),
              "e2e_max_ms": float(ms.max()), "host_rss_peak_mb": None if rss_hwm_kb is None else rss_hwm_kb / 1024,
              "gpu_memory_peak_mb_nvidia_smi": gpu_peak,
              **{k: diag.get(k) for k in ("backend", "device", "forward", "device_reason", "backend_reason")}}
    if diag.get("latency_p50_s"):
        result.update(inference_p50_ms=float(diag["latency_p50_s"]) * 1e3,
                      inference_p95_ms=float(diag["latency_p95_s"]) * 1e3)
    slowest = np.argsort(ms)[::-1][:5]
    log("slowest chunks (index of the chunk in the run: ms): " + ", ".join(f"#{i}: {ms[i]:.0f}" for i in sorted(slowest)))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=20.0, help="camera/joint publish rate")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", help="model folder (default: a tiny random model)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--policy-threads", type=int, default=0,
                   help="policy_node num_threads (0 = torch's default, one per core)")
    args = p.parse_args()
    ros_isolation()
    r = measure(args.model, args.backend, args.device, args.seconds, args.rate, args.image_size, args.policy_threads)
    print(f"policy_node end-to-end latency, image stamp -> JointTrajectory received ({r['chunks']} chunks over "
          f"{args.seconds:.0f} s, {args.image_size}px cameras at {args.rate:.0f} Hz, backend {r.get('backend') or '?'}, "
          f"device {r.get('device') or '?'}, model {'tiny random' if not args.model else args.model}):")
    print(f"  p50 {r['e2e_p50_ms']:.1f} ms   p95 {r['e2e_p95_ms']:.1f} ms   max {r['e2e_max_ms']:.1f} ms; "
          f"node host RSS peak {r['host_rss_peak_mb']:.0f} MB")
    if "inference_p50_ms" in r:
        print(f"  of which inference (preprocess + forward, node's own timer): p50 {r['inference_p50_ms']:.1f} ms, "
              f"p95 {r['inference_p95_ms']:.1f} ms")


if __name__ == "__main__":
    main()
