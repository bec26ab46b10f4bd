"""Starting nodes as child processes (where `ros2 launch` is not installed) and stopping them.

Children inherit the environment, so they share this process's ROS domain and localhost-only
discovery. They are stopped by their own pid: SIGINT (clean shutdown), then SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml


class NodeProcess:
    def __init__(self, module: str, node_name: str, params: dict, workdir: Path, params_files=(), args=()):
        """``params_files`` load first (e.g. the shipped config/*.yaml); ``params`` override them;
        ``args`` go to the module before the ROS arguments."""
        self.module, self.node_name, self.params = module, node_name, params
        self.workdir, self.params_files, self.args = Path(workdir), [str(f) for f in params_files], list(args)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"{node_name}.log"

    def start(self) -> "NodeProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        params_file = self.workdir / f"{self.node_name}.params.yaml"
        params_file.write_text(yaml.safe_dump({self.node_name: {"ros__parameters": self.params}}))
        files = [a for f in [*self.params_files, str(params_file)] for a in ("--params-file", f)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args, "--ros-args", *files],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
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

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
