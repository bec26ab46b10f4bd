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


RELEASE = ("from bitvla_ros.kernels import heap; a = heap.release_free_heap(); heap.keep_activation_pages(); "
           "print(a, heap.release_free_heap())")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("env, expected", [({}, "False True"), ({"BITVLA_CPU_HEAP": "keep"}, "False False"),
                                           ({"BITVLA_CPU_HEAP": "0"}, "False False")])
def test_free_heap_goes_back_between_chunks_unless_kept(env, expected):
    # Nothing to release before the settings are applied; after, unless told to keep it.
    out = subprocess.run([sys.executable, "-c", RELEASE], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected
