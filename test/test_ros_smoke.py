"""The ROS wheels work here: a sensor_msgs/Image crosses from a child process to the test, exactly."""

import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

from ros_helpers.image_publisher import HEIGHT, WIDTH, known_image

PUBLISHER = Path(__file__).parent / "ros_helpers" / "image_publisher.py"
WAIT_S = 20.0


def test_ros_isolation_is_set():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101
    assert os.path.isdir(os.environ["ROS_LOG_DIR"])


def test_image_from_child_process_arrives_exactly(rclpy_context, venv_python):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    topic = f"smoke_{uuid.uuid4().hex[:8]}/image_raw"
    node = rclpy.create_node("test_image_subscriber", context=rclpy_context)
    received = []
    node.create_subscription(Image, topic, received.append, 10)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    child = subprocess.Popen(
        [venv_python, str(PUBLISHER), topic, "--seconds", str(WAIT_S + 10)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not received and child.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        exited_early = child.poll()
    finally:
        child.terminate()
        try:
            output, _ = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
        executor.shutdown()
        node.destroy_node()

    log = output.decode(errors="replace")
    assert exited_early is None, f"publisher exited with {exited_early}:\n{log}"
    assert received, f"no image within {WAIT_S} s; publisher output:\n{log}"
    msg = received[0]
    assert (msg.height, msg.width, msg.encoding, msg.step) == (HEIGHT, WIDTH, "rgb8", WIDTH * 3)
    pixels = np.frombuffer(msg.data, dtype=np.uint8).reshape(HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(pixels, known_image())
