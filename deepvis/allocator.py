"""The C allocator's settings for a process that runs many forward passes on a CPU (the app and the CLI).

A CPU forward pass allocates and frees a tensor for every layer's output, 0.1-40 MB each on Lite0.  glibc's
``malloc`` serves a block above its *mmap threshold* straight from the kernel and unmaps it when freed, and gives
the top of its heap back once more than the *trim threshold* lies free there (mallopt(3): 128 KiB, raised on the
fly up to 32 MiB, and twice that).  Either way the next pass gets fresh pages, and the kernel zeroes each one on
its first touch.  :func:`keep_freed_memory` raises the mmap threshold to 64 MiB and the trim threshold to
256 MiB (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``; the same as the
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` variables), so a freed map stays in the process and
the next pass reuses it.

Measured on the 2-core CPU (``python -m bench.bench_occlusion``): an occlusion map of 169 windows takes about
1.1-1.5 s instead of 2.0-2.3 s; whole forward passes gain up to 30 %, depending on the machine's state.  (These
two values were the fastest of those tried, 32 MiB-1 GiB; a 64 MiB trim threshold gains nothing.)  The cost:
up to 256 MiB of freed memory may stay with each of the process's malloc arenas instead of returning to the
system; blocks over 64 MiB still go back at once.

Only glibc (Linux) has these settings; elsewhere the call does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20

_done: bool | None = None
_lock = threading.Lock()


def keep_freed_memory() -> bool:
    """Keep freed memory in the process for the next forward pass (module docstring); True where it took
    effect.  Idempotent and cheap: the app calls it on every run of its script."""
    global _done
    with _lock:
        if _done is None:
            _done = _set_thresholds()
        return _done


def _set_thresholds() -> bool:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt (musl, macOS)
        return False
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
