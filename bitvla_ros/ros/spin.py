"""Running a node until Ctrl-C or shutdown, and then shutting down cleanly; the executors on offer.

The single-threaded executor is the default: rclpy's multi-threaded one stalls timers and burns a
core under load (ros2/rclpy#1223), and a node that keeps slow work (inference, model loads) on
threads of its own gains nothing from it. docs/node.md has the measurements.
"""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor


EXECUTORS = {
    "single_threaded": SingleThreadedExecutor,
    "multi_threaded": lambda: MultiThreadedExecutor(num_threads=2),
}


def make_executor(name: str):
    if name not in EXECUTORS:
        raise ValueError(f"executor must be one of {sorted(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name]()


def run(make_node, make_executor=None, args=None) -> None:
    """Spin `make_node()` on `make_executor()`, or on the node's own `make_executor()` if it has one."""
    rclpy.init(args=args)
    node = make_node()
    executor = make_executor() if make_executor is not None else node.make_executor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
