"""QoS profiles shared by the nodes."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# Cameras and joint states: best effort, keep the latest (a late frame is worth less than a new one).
SENSORS = qos_profile_sensor_data
# The instruction: reliable and latched, so a node started later still gets the current task.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Recording every frame of a demonstration, or lockstep with a simulator, needs each sample;
# a reliable subscription only matches reliable publishers, so it is opt-in.
RELIABLE_SENSORS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

INPUT_RELIABILITY = {"best_effort": SENSORS, "reliable": RELIABLE_SENSORS}


def sensor_qos(reliability: str) -> QoSProfile:
    """The camera / joint-state subscription profile named by an `input_reliability` parameter."""
    if reliability not in INPUT_RELIABILITY:
        raise ValueError(f"input_reliability must be one of {sorted(INPUT_RELIABILITY)}, got {reliability!r}; "
                         "use reliable only when every camera and joint publisher is reliable")
    return INPUT_RELIABILITY[reliability]


def subscribe_sensor(node, kind, topic: str, callback, reliability: str, **kwargs):
    """A camera or joint-state subscription with the profile named by `input_reliability`. On a
    publisher it cannot match, it says what to change (rclpy's default only names the policy, and
    DDS then delivers nothing)."""
    from rclpy.event_handler import SubscriptionEventCallbacks

    def on_incompatible(info) -> None:
        node.get_logger().error(
            f"{topic}: a publisher's QoS does not match this {reliability} subscription (policy "
            f"{info.last_policy_kind}), so none of its messages arrive; with a best-effort publisher set "
            "input_reliability: best_effort")
    return node.create_subscription(kind, topic, callback, sensor_qos(reliability),
                                    event_callbacks=SubscriptionEventCallbacks(incompatible_qos=on_incompatible),
                                    **kwargs)
