"""Declaring ROS parameters from one table: name, default, description, constraints, read-only.

A parameter's allowed values live in its row: `choices` (a string from a list) or `limits` (a
closed numeric range). `declare` puts them in the descriptor (integer/floating-point ranges, the
choices in `additional_constraints`), so `ros2 param describe` shows them, and `check` enforces
them in a node's validate callback, before any change is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any



@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: tuple = ()
    limits: tuple | None = None  # (low, high), inclusive

    def descriptor(self):
        # imported here, so that the parameter tables import without ROS (bitvla import-bag)
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        d = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(map(str, self.choices))
        if self.limits is not None:
            lo, hi = self.limits
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        return d

    def check(self, value) -> None:
        """Raise ValueError with what was expected and what was given."""
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.limits is not None and not isinstance(value, (list, tuple, str, bool)):
            lo, hi = self.limits
            if not lo <= value <= hi:
                raise ValueError(f"{self.name} must be in [{lo}, {hi}], got {value!r}")


def declare(node, params: list[Param]) -> dict[str, Any]:
    """Declare every parameter with its descriptor; return the values in effect."""
    values = {}
    for p in params:
        value = node.declare_parameter(p.name, p.default, p.descriptor()).value
        p.check(value)  # a params file can set a value the descriptor does not enforce (choices)
        values[p.name] = value
    return values


def check(params: list[Param], changes: dict[str, Any]) -> None:
    """Check proposed values against their rows (unknown names are left to rclpy)."""
    rows = {p.name: p for p in params}
    for name, value in changes.items():
        if name in rows:
            rows[name].check(value)
