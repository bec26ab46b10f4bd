"""The CPU heap setting: applied once per process on glibc, and can be turned off."""

import os
import platform
import subprocess
import sys

import pytest

CHECK = "from bitvla_ros.kernels import heap; print(heap.keep_activation_pages(), heap.keep_activation_pages())"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("env, expected", [({}, "True True"), ({"BITVLA_CPU_HEAP": "0"}, "False False")])
def test_applied_once_unless_turned_off(env, expected):
    out = subprocess.run([sys.executable, "-c", CHECK], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected
