"""Every process that starts rclpy here talks over localhost only, in a ROS domain of its own."""

from __future__ import annotations

import os
import random
import sys


def isolate(domain_id: int | None = None) -> int:
    """Set localhost-only discovery and a domain (random in 1..101 unless given) for this process
    and its children. Must run before rclpy is imported."""
    if "rclpy" in sys.modules:
        raise RuntimeError("the ROS environment must be set before rclpy is imported")
    domain = domain_id if domain_id is not None else random.randint(1, 101)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain
