"""Declaring ROS parameters from one table: name, default, description, read-only or not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any



@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = False


def declare(node, params: list[Param]) -> dict[str, Any]:
    """Declare every parameter with its description; return the values in effect."""
    from rcl_interfaces.msg import ParameterDescriptor  # here, so that the tables import without ROS

    values = {}
    for p in params:
        descriptor = ParameterDescriptor(description=p.description, read_only=p.read_only)
        values[p.name] = node.declare_parameter(p.name, p.default, descriptor).value
    return values
