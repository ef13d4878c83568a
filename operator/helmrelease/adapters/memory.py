"""Hand the C heap's free pages back to the system, on a clock, so a burst's peak does not stay resident.

An install burst (a thousand HelmReleases created at once) peaks well above what the operator keeps once it is over,
and glibc's malloc keeps the freed pages in its heap: the resident size stays at the peak for good, which is what a
memory limit and its OOM kill see. ``malloc_trim`` returns the free pages (inside the heap too, not only at its
top). On a C library without it (musl) there is nothing to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

#: Seconds between trims: a trim costs milliseconds, a burst's pages are back within this.
TRIM_EVERY: Final = 30.0


@functools.cache  # looked up once: every trim used to open the C library again
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


async def release_free_memory_periodically(every: float = TRIM_EVERY) -> None:
    """`release_free_memory` every `every` seconds, until cancelled (in a thread: it walks the whole heap)."""
    if _malloc_trim() is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the process")
        return
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(release_free_memory)
