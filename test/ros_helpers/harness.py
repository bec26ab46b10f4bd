"""Running a node under test in its own process, and a peer node in the test process.

    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc: ...

The child inherits the test's ROS isolation (localhost discovery, its domain, its log dir) through
the environment and is always stopped by its own pid: SIGINT first (clean shutdown), then SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


class NodeProcess:
    def __init__(self, module: str, node_name: str, params: dict, workdir: Path, args: list[str] | None = None,
                 params_files: list[Path] = ()):
        """``params_files`` load first (e.g. the shipped config/*.yaml); ``params`` override them."""
        self.module, self.node_name, self.params = module, node_name, params
        self.params_files = [str(f) for f in params_files]
        self.workdir = Path(workdir)
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"{node_name}.log"

    def __enter__(self) -> "NodeProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        params_file = self.workdir / f"{self.node_name}.yaml"
        params_file.write_text(yaml.safe_dump({self.node_name: {"ros__parameters": self.params}}))
        self._log = open(self.log_path, "w")
        files = [a for f in [*self.params_files, str(params_file)] for a in ("--params-file", f)]
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args, "--ros-args", *files],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def __exit__(self, *exc) -> None:
        self.stop()


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
