"""Running a test file again in a child pytest under Triton's interpreter (CPU-only machines).

TRITON_INTERPRET must be set before anything imports triton, and another test module of this
process may have imported it already: so the file runs again in a fresh process with the
variable set and a flag telling its tests that they are the child.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def run_in_triton_interpreter(test_file: str | Path, child_flag: str, timeout_s: float = 600) -> str:
    """Run ``test_file`` in a child pytest with TRITON_INTERPRET=1 and ``child_flag``=1; fail with
    its output unless it passes; return its summary line."""
    if not triton_importable():
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1", **{child_flag: "1"})
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(test_file).resolve())]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    tail = (r.stdout[-6000:] + "\n" + r.stderr[-3000:]).strip()
    assert r.returncode == 0, f"interpreter run failed (rc {r.returncode}):\n{tail}"
    summary = [ln for ln in r.stdout.splitlines() if " passed" in ln or " failed" in ln]
    assert summary and " passed" in summary[-1] and "failed" not in summary[-1], tail
    return summary[-1]
