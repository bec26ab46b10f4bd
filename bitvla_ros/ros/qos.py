"""QoS profiles shared by the nodes."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# Cameras and joint states: best effort, keep the latest (a late frame is worth less than a new one).
SENSORS = qos_profile_sensor_data
# The instruction: reliable and latched, so a node started later still gets the current task.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
