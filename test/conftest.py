"""Test harness: ROS isolation, set before anything imports rclpy, and shared fixtures.

Every rclpy process in the tests talks over localhost only, in a ROS domain of its own run, and
logs to a temp dir. `make test` chooses these and sets BITVLA_TEST_ENV=1; a bare `pytest` run gets
them here. Child processes inherit them through os.environ.
"""

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("BITVLA_TEST_ENV") != "1" or not {"ROS_DOMAIN_ID", "ROS_LOG_DIR"} <= set(os.environ):
    # Not started by the Makefile: ROS_DOMAIN_ID from the caller's shell may be a live robot's.
    os.environ["BITVLA_TEST_ENV"] = "1"
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 101))
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="bitvla-roslog-")
    _OWN_LOG_DIR = os.environ["ROS_LOG_DIR"]
else:
    _OWN_LOG_DIR = None
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "torchinductor"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
# The kernel autotuner's per-machine timings: inside the repo, not the user's cache.
os.environ.setdefault("BITVLA_CACHE_DIR", str(REPO / ".cache" / "bitvla"))

# test/reporting.py: the `report` fixture, printed in the terminal summary.
pytest_plugins = ["reporting"]

if "rclpy" in sys.modules:  # a plugin got there first; rcl may have read the environment already
    raise RuntimeError("rclpy was imported before test/conftest.py set the ROS test environment")

# Loading triton's native library after MuJoCo's EGL rendering has started crashes the process
# (SIGSEGV in `import triton`), and torch imports triton on its first dynamo use (a device
# context, torch.compile). LIBERO tests render; tests after them in the same process may be the
# first to touch dynamo. Load it now, before any rendering, so the suite does not depend on order.
try:
    import torch._dynamo  # noqa: E402,F401
except ImportError:
    pass


def pytest_unconfigure(config):
    if _OWN_LOG_DIR is not None:
        shutil.rmtree(_OWN_LOG_DIR, ignore_errors=True)


@pytest.fixture
def rclpy_context():
    """An rclpy Context of the test's own, initialised and shut down around it.

    Create nodes and executors with `context=rclpy_context`.
    """
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture
def venv_python():
    """The interpreter running the tests (the venv's), for child processes.

    Children inherit os.environ: the ROS settings above, and the ROS wheels' library path and
    bootstrap flag, which are only right for this same interpreter.
    """
    return sys.executable
