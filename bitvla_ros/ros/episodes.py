"""Driving episodes from outside the nodes: set parameters, call services, wait for the sim's
episode status. Used by `bitvla record`, `bitvla eval` and `bitvla demo`."""

from __future__ import annotations

import json
import time

from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from diagnostic_msgs.msg import DiagnosticArray


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(v))


class EpisodeDriver:
    def __init__(self, node: Node, executor):
        self.node, self.executor = node, executor
        self.statuses: list[dict] = []
        self.diagnostics: dict[str, dict] = {}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(String, "episode_status", lambda m: self.statuses.append(json.loads(m.data)), qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._clients = {}

    def _on_diagnostics(self, msg) -> None:
        for s in msg.status:
            self.diagnostics[s.name] = {"level": int.from_bytes(s.level, "little") if isinstance(s.level, bytes)
                                        else int(s.level), "message": s.message,
                                        **{kv.key: kv.value for kv in s.values}}

    def spin_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return True
        return condition()

    def _client(self, kind, name):
        if name not in self._clients:
            self._clients[name] = self.node.create_client(kind, name)
        return self._clients[name]

    def call(self, kind, name: str, request, timeout: float = 60.0):
        client = self._client(kind, name)
        if not self.spin_until(client.service_is_ready, timeout):
            raise TimeoutError(f"service {name} is not available after {timeout:.0f} s; is the node running?")
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            raise TimeoutError(f"service {name} did not answer in {timeout:.0f} s")
        return future.result()

    def trigger(self, name: str, timeout: float = 120.0):
        res = self.call(Trigger, name, Trigger.Request(), timeout)
        if not res.success:
            raise RuntimeError(f"{name} failed: {res.message}")
        return res.message

    def trigger_holding(self, name: str, instruction: str, undo: str | None = None, attempts: int = 50) -> str:
        """Call Trigger service `name` until its reply quotes `instruction`: the node then holds the
        new episode's latched instruction, which may arrive a moment after the sim's reset. A refusal
        (no instruction yet) is retried; after a reply quoting another one, `undo` is called first."""
        for _ in range(attempts):
            try:
                message = self.trigger(name)
            except RuntimeError:
                message = None
            if message is not None and repr(instruction) in message:
                return message
            if message is not None and undo:
                self.trigger(undo)
            self.spin_until(lambda: False, 0.1)
        raise RuntimeError(f"{name}: the node never received the instruction {instruction!r}")

    def enable(self, node_name: str, on: bool) -> None:
        self.call(SetBool, f"/{node_name}/enable", SetBool.Request(data=on))

    def set_params(self, node_name: str, values: dict, timeout: float = 120.0) -> None:
        req = SetParameters.Request(parameters=[Parameter(name=k, value=_value(v)) for k, v in values.items()])
        res = self.call(SetParameters, f"/{node_name}/set_parameters", req, timeout)
        bad = [r.reason for r in res.results if not r.successful]
        if bad:
            raise RuntimeError(f"{node_name} refused {values}: {bad}")

    def wait_for_diagnostics(self, name: str, timeout: float) -> bool:
        return self.spin_until(lambda: name in self.diagnostics, timeout)

    def reset_episode(self, timeout: float = 300.0) -> dict:
        """Reset the sim with its current task / init state; the first status of the new episode."""
        before = max((s["episode"] for s in self.statuses), default=0)
        self.trigger("/bitvla_sim/reset", timeout)
        if not self.spin_until(lambda: any(s["episode"] > before for s in self.statuses), timeout):
            raise TimeoutError("the sim did not report the new episode")
        return [s for s in self.statuses if s["episode"] > before][-1]

    def wait_done(self, episode: int, timeout: float) -> dict | None:
        """The final status of `episode`, or None on timeout."""
        done = lambda: next((s for s in self.statuses if s["episode"] == episode and s["done"]), None)  # noqa: E731
        self.spin_until(lambda: done() is not None, timeout)
        return done()
