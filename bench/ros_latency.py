"""End-to-end latency of policy_node: image stamp → JointTrajectory received, over real DDS.

Starts policy_node in its own process on a tiny random BitVLA (or --model), publishes two cameras
and joint states at --rate Hz stamped with the current time, and measures, for every chunk that
arrives, now − header.stamp (the header carries the observation's stamp). Prints p50/p95/max and
the node's own inference latency from /diagnostics.

    .venv/bin/python bench/ros_latency.py [--seconds 30] [--backend auto] [--model DIR] [--policy-threads N]
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

from common import ros_isolation, tiny_model_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=20.0, help="camera/joint publish rate")
    p.add_argument("--backend", default="auto")
    p.add_argument("--model", help="model folder (default: a tiny random model)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--policy-threads", type=int, default=0,
                   help="policy_node num_threads (0 = torch's default, one per core)")
    args = p.parse_args()
    ros_isolation()

    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from bitvla_ros.ros.conversions import rgb_to_image

    tmp = Path(tempfile.mkdtemp(prefix="bitvla-latency-"))
    model = args.model or str(tiny_model_folder(tmp / "model"))
    params = {"bitvla_policy": {"ros__parameters": {
        "model_path": model, "backend": args.backend, "image_topics": ["cam0", "cam1"],
        "proprio_names": [f"p{i}" for i in range(8)], "action_names": [f"a{i}" for i in range(7)],
        "start_enabled": True, "max_observation_age_s": 5.0, "diagnostics_rate_hz": 2.0,
        "num_threads": args.policy_threads}}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    log = open(tmp / "node.log", "w")
    node_proc = subprocess.Popen([sys.executable, "-m", "bitvla_ros.ros.policy_node", "--ros-args",
                                  "--params-file", str(tmp / "params.yaml")], stdout=log, stderr=subprocess.STDOUT)
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
    rgb = np.random.default_rng(0).integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)

    def publish():
        stamp = clock.now().to_msg()
        for pub in cams:
            msg = rgb_to_image(Image(), rgb)
            msg.header.stamp = stamp
            pub.publish(msg)
        js = JointState(name=[f"p{i}" for i in range(8)], position=[0.0] * 8)
        js.header.stamp = stamp
        joints.publish(js)

    node.create_timer(1.0 / args.rate, publish)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 120 and not latencies:  # model load
            rclpy.spin_once(node, timeout_sec=0.05)
        latencies.clear()  # the first chunk includes warm-up
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    if not latencies:
        raise SystemExit(f"no chunk arrived; node log: {tmp / 'node.log'}")
    ms = np.array(latencies) * 1e3
    slowest = np.argsort(ms)[::-1][:5]
    print("slowest chunks (index of the chunk in the run: ms): "
          + ", ".join(f"#{i}: {ms[i]:.0f}" for i in sorted(slowest)))
    print(f"policy_node end-to-end latency, image stamp -> JointTrajectory received ({len(ms)} chunks over "
          f"{args.seconds:.0f} s, {args.image_size}px cameras at {args.rate:.0f} Hz, backend {diag.get('backend', '?')}, "
          f"model {'tiny random' if not args.model else args.model}):")
    print(f"  p50 {np.percentile(ms, 50):.1f} ms   p95 {np.percentile(ms, 95):.1f} ms   max {ms.max():.1f} ms")
    if diag:
        p50, p95 = float(diag["latency_p50_s"]) * 1e3, float(diag["latency_p95_s"]) * 1e3
        print(f"  of which inference (preprocess + forward, node's own timer): p50 {p50:.1f} ms, p95 {p95:.1f} ms")


if __name__ == "__main__":
    main()
