"""``keep_freed_memory``: a training process keeps freed memory for reuse instead of faulting fresh pages in.

Each case runs in a fresh interpreter (the setting is process-wide and cannot be undone) and takes a
64 MiB block from the C library's ``malloc`` ten times, writing every byte and freeing it — above
glibc's largest automatic mmap threshold (32 MiB), so with the C library's defaults every one is a
fresh ``mmap`` faulted in page by page — and counts the minor page faults of the last nine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = """
import ctypes, json, resource
from ablab.train.compute import keep_freed_memory
took = {setup}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def block():
    p = libc.malloc(64 * 2**20)
    libc.memset(p, 1, 64 * 2**20)
    libc.free(p)
block()  # the first one faults in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    block()
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""
PAGES = 64 * 2**20 // 4096  # pages of one 64 MiB tensor

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                 reason="the setting is glibc's (Linux)")


def _child(env_value: str | None, setup: str = "keep_freed_memory()") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ABLAB_MALLOC"}
    if env_value is not None:
        env["ABLAB_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD.replace("{setup}", setup)], env=env, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_glibc
def test_with_the_setting_a_freed_block_is_reused_without_page_faults():
    got = _child(None)
    assert got["took"] is True
    assert got["faults"] < PAGES // 10, got  # nine 64 MiB blocks: not a tenth of one faulted in again


@linux_glibc
def test_a_local_worker_process_sets_it_up_as_it_starts():
    """A forkserver or spawned worker does not inherit the driver's setting: its initializer makes it."""
    got = _child(None, "__import__('ablab.execute.local', fromlist=['x'])._init_worker(None, 1, []) or True")
    assert got["faults"] < PAGES // 10, got


@linux_glibc
@pytest.mark.parametrize("value", ["system", " System "])
def test_abl_malloc_system_leaves_the_c_library_defaults_which_fault_every_block_in(value):
    got = _child(value)
    assert got["took"] is False
    assert got["faults"] > 9 * PAGES // 2, got  # every one of the nine faulted in (at least half its pages)


def test_off_linux_or_turned_off_it_does_nothing_and_says_so(monkeypatch):
    from ablab.train import compute

    monkeypatch.setenv("ABLAB_MALLOC", "system")
    assert compute.keep_freed_memory() is False
    monkeypatch.delenv("ABLAB_MALLOC")
    monkeypatch.setattr(compute.sys, "platform", "darwin")
    assert compute.keep_freed_memory() is False


def test_a_mistyped_value_is_one_clear_error_before_anything_runs(monkeypatch, capsys):
    from ablab.cli import main
    from ablab.errors import AblabError
    from ablab.train import compute

    monkeypatch.setenv("ABLAB_MALLOC", "sytem")
    with pytest.raises(AblabError, match="ABLAB_MALLOC='sytem' is not a setting"):
        compute.keep_freed_memory()
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ABLAB_MALLOC='sytem'") and len(err.strip().splitlines()) == 1, err
