"""Running a node until Ctrl-C or shutdown, and then shutting down cleanly."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException


def run(make_node, make_executor, args=None) -> None:
    rclpy.init(args=args)
    node = make_node()
    executor = make_executor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
