"""glibc malloc settings for a process that streams large tensors a chunk at a time (Linux only).

PyTorch's CPU tensors come from malloc. By default glibc hands freed memory at the top of its heap
back to the kernel once it exceeds a trim threshold that follows the largest block freed so far (at
most 64 MiB), so a render that frees one chunk's tensors and allocates the next chunk's of the same
size page-faults them in anew, page by page. Rendering a 480p 2-layer bake in 4-frame chunks took
10 000 to 29 000 such faults a pass of 48 frames and about 2 µs each on this project's VM
(bench/RESULTS.md, "Render ratio: freed memory kept"). Keeping up to `TRIM` bytes of freed heap lets
the next chunk reuse them, the reason Intel's PyTorch CPU guide swaps in jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
TRIM = 256 << 20  # freed heap kept for reuse; the process's resident memory may stay this much above its need
MMAP = 32 << 20  # glibc's largest: a block over it is a mapping of its own, returned to the kernel when freed


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds, unless the user set malloc's own; whether they were set.

    Setting them also stops glibc's adjustment of both; a block over `MMAP` (a long clip's bake, its
    frames) is still mapped on its own and returned when freed, so peak memory is what it was.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    chosen = any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"))
    if not sys.platform.startswith("linux") or chosen or "malloc" in tunables:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no C library to ask
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM) == 1
