"""A fake robot for cross-process node tests: publishes cameras, joint states, the instruction
(and optionally teleop commands) at 10 Hz; collects commands and /diagnostics. Every trajectory it
receives goes to a stand-in joint_trajectory_controller (test/jtc.py), so tests can check that
the controller would have executed it."""

import numpy as np

from jtc import TrajectoryController
from ros_helpers.harness import spin_until


class FakeRobot:
    """Publishes cameras, joint states and the instruction; collects commands and diagnostics."""

    def __init__(self, context, cameras: list[str], proprio: list[str], teleop_topic: str | None = None,
                 stream: bool = False, reliable: bool = False):
        """``stream``: the policy publishes Float64MultiArray (else JointTrajectory) on joint_command.
        ``reliable``: cameras and joint states are published reliably (else best effort, as many drivers do)."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.event_handler import PublisherEventCallbacks
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        self.node = rclpy.create_node("fake_robot", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.cameras, self.proprio = cameras, proprio
        sensors = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.incompatible = []  # (rclpy's default handler logs through a deprecated call)
        events = PublisherEventCallbacks(incompatible_qos=self.incompatible.append)
        self.camera_pubs = [self.node.create_publisher(CompressedImage if t.endswith("/compressed") else Image, t,
                                                       sensors, event_callbacks=events) for t in cameras]
        self.joint_pub = self.node.create_publisher(JointState, "joint_states", sensors, event_callbacks=events)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.instruction_pub = self.node.create_publisher(String, "instruction", latched)
        self.commands, self.diagnostics, self.stamps = [], [], []
        from std_msgs.msg import Float64MultiArray

        self.arrivals = []
        self.controller = TrajectoryController(dim=7)
        self.node.create_subscription(Float64MultiArray if stream else JointTrajectory, "joint_command",
                                      self._on_command, 50)
        self.teleop_pub = self.node.create_publisher(JointTrajectory, teleop_topic, 10) if teleop_topic else None
        self.JointTrajectory, self.teleop_value = JointTrajectory, 0.0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.age_s, self.encoding, self.nan = 0.0, "rgb8", False
        self.node.create_timer(0.1, self.publish)
        self.Image, self.CompressedImage, self.JointState, self.String = Image, CompressedImage, JointState, String

    def _on_command(self, msg):
        now = self.node.get_clock().now().nanoseconds * 1e-9
        self.commands.append(msg)
        self.arrivals.append(now)
        if isinstance(msg, self.JointTrajectory):
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
            self.controller.receive(stamp, times, [list(p.positions) for p in msg.points], now)

    def publish(self):
        from bitvla_ros.ros.conversions import rgb_to_compressed, rgb_to_image

        now = self.node.get_clock().now()
        stamp = (now - __import__("rclpy").duration.Duration(seconds=self.age_s)).to_msg()
        self.stamps.append(stamp.sec + stamp.nanosec * 1e-9)
        rgb = np.full((48, 64, 3), 90, np.uint8)
        for topic, pub in zip(self.cameras, self.camera_pubs):
            if topic.endswith("/compressed"):
                msg = rgb_to_compressed(self.CompressedImage(), rgb)
            else:
                msg = rgb_to_image(self.Image(), rgb)
                msg.encoding = self.encoding if self.encoding != "rgb8" else msg.encoding
            msg.header.stamp = stamp
            pub.publish(msg)
        js = self.JointState(name=self.proprio + ["extra_joint"],
                             position=[float("nan") if self.nan else 0.1 * i for i in range(len(self.proprio) + 1)])
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        if self.teleop_pub is not None:
            from trajectory_msgs.msg import JointTrajectoryPoint

            self.teleop_value += 1.0
            cmd = self.JointTrajectory(points=[JointTrajectoryPoint(positions=[self.teleop_value] * 7)])
            cmd.header.stamp = stamp
            self.teleop_pub.publish(cmd)

    def instruct(self, text):
        self.instruction_pub.publish(self.String(data=text))

    def spin_until(self, condition, timeout):
        return spin_until(self.executor, condition, timeout)

    def spin_for(self, seconds):
        spin_until(self.executor, lambda: False, seconds)

    def last_status(self, name="bitvla_policy"):
        for array in reversed(self.diagnostics):
            for s in array.status:
                if s.name == name:
                    return s, {kv.key: kv.value for kv in s.values}
        return None, {}

    def wait_for_node(self, name: str, timeout: float = 60.0) -> bool:
        """Until `name` publishes /diagnostics: it is up, with its services (a restarted node's
        predecessor may linger in DDS discovery, so a ready-looking service proves nothing)."""
        self.diagnostics.clear()
        return self.spin_until(lambda: self.last_status(name)[0] is not None, timeout)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


