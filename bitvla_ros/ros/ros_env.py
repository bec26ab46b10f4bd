"""Every process that starts rclpy here talks over localhost only, in a ROS domain of its own."""

from __future__ import annotations

import os
import random
import sys

# Domains handed out here; with localhost-only discovery every one of them has its own ports.
DOMAINS = range(1, 102)


def isolation_env(domain: int) -> dict[str, str]:
    """The environment variables that put a process on localhost-only discovery in ``domain``."""
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}


def isolate(domain_id: int | None = None) -> int:
    """Set localhost-only discovery and a domain (random in DOMAINS unless given) for this process
    and its children. Must run before rclpy is imported."""
    if "rclpy" in sys.modules:
        raise RuntimeError("the ROS environment must be set before rclpy is imported")
    domain = domain_id if domain_id is not None else random.choice(DOMAINS)
    os.environ.update(isolation_env(domain))
    return domain


def current_domain() -> int:
    """This process's domain, or a random one if none is set."""
    return int(os.environ.get("ROS_DOMAIN_ID") or random.choice(DOMAINS))


def job_domain(base: int, job: int) -> int:
    """Job ``job``'s own domain, counting on from ``base`` within DOMAINS (so that the sim and
    policy of one job talk only to each other)."""
    return DOMAINS[(base - DOMAINS.start + job) % len(DOMAINS)]
