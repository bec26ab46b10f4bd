"""Child process for cross-process ROS tests: publishes a known sensor_msgs/Image.

    python image_publisher.py TOPIC [--seconds S]

Publishes the same 224x224 rgb8 image every 50 ms until it is terminated or S seconds have passed
(so that it never outlives a test that lost track of it).
"""

import argparse
import time

import numpy as np

HEIGHT, WIDTH = 224, 224


def known_image() -> np.ndarray:
    """A 224x224x3 uint8 pattern where every byte depends on its position."""
    return (np.arange(HEIGHT * WIDTH * 3, dtype=np.int64) % 251).astype(np.uint8).reshape(HEIGHT, WIDTH, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("topic")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("test_image_publisher")
    publisher = node.create_publisher(Image, args.topic, 10)
    msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
    msg.data = known_image().tobytes()
    deadline = time.monotonic() + args.seconds
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            publisher.publish(msg)
            time.sleep(0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
