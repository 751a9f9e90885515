"""glibc keeps freed memory for the next chunk's tensors: fewer page faults, the user's own settings kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from canon_edit import allocator

CHUNKS = """
import resource, torch
from canon_edit.allocator import keep_freed_memory
kept = keep_freed_memory()
def chunk():  # a chunk's tensors, all freed before the next chunk's
    tensors = [torch.ones(6 << 20) for _ in range(8)]  # 8 x 24 MiB
    del tensors
chunk(); chunk()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
chunk()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env: dict[str, str]) -> tuple[str, int]:
    """(whether the process kept freed memory, the page faults of its third chunk)."""
    environ = {k: v for k, v in os.environ.items() if "MALLOC" not in k}
    command = [sys.executable, "-c", CHUNKS]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**environ, **env})
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_chunk_reuses_the_memory_the_last_one_freed():
    kept = _faults({})
    # a user's own setting is kept: here glibc's initial thresholds, held, so each 24-MiB tensor is a
    # mapping of its own, unmapped when freed and faulted in anew by the next chunk
    trimmed = _faults({"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert kept[0] == "True" and trimmed[0] == "False"
    assert trimmed[1] > 40000  # the chunk's 192 MiB, page by page
    assert kept[1] < trimmed[1] / 4


@pytest.mark.parametrize(
    "name, value",
    [
        ("MALLOC_TRIM_THRESHOLD_", "1048576"),
        ("MALLOC_MMAP_THRESHOLD_", "65536"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
    ],
)
def test_a_users_own_malloc_settings_are_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called"))
    assert allocator.keep_freed_memory() is False
