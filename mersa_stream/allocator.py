"""One process-wide malloc setting for long runs (glibc only; elsewhere nothing happens).

CTranslate2 allocates and frees buffers of tens of MB or more for each encoder call (attention
over 1500 frames, ~60 MB a window). After such a buffer is freed, glibc raises its mmap threshold,
so the next ones come from the heap, which then fragments: over a 30-minute `analyze --pack` RSS
grew by up to 117%. A fixed threshold of 8 MB keeps the big buffers in mmap, returned to the OS
when freed (measured in docs/benchmarks.md). A user's own MALLOC_MMAP_THRESHOLD_ is left as it is.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
THRESHOLD_BYTES = 8 << 20


def cap_mmap_threshold(size: int = THRESHOLD_BYTES) -> bool:
    """True when the setting took effect."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        # the symbols already loaded into this process: libc's, where there is a glibc
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, size))
