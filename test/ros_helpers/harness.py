"""Running a node under test in its own process, and a peer node in the test process.

    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc: ...

The child inherits the test's ROS isolation (localhost discovery, its domain, its log dir) through
the environment and is always stopped by its own pid: SIGINT first (clean shutdown), then SIGKILL.
"""

from __future__ import annotations

import time
from pathlib import Path

from bitvla_ros.ros import processes


class NodeProcess(processes.NodeProcess):
    """The package's child-process runner, with the test's argument order."""

    def __init__(self, module: str, node_name: str, params: dict, workdir: Path, args: list[str] | None = None,
                 params_files: list[Path] = ()):
        super().__init__(module, node_name, params, workdir, params_files=params_files, args=args or ())


def spin_until(executor, condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=step)
        if condition():
            return True
    return condition()


def call(executor, client, request, timeout: float = 20.0):
    """Call a service and wait for the answer while spinning."""
    if not spin_until(executor, client.service_is_ready, timeout):
        raise TimeoutError(f"service {client.srv_name} did not come up in {timeout} s")
    future = client.call_async(request)
    if not spin_until(executor, future.done, timeout):
        raise TimeoutError(f"service {client.srv_name} did not answer in {timeout} s")
    return future.result()
