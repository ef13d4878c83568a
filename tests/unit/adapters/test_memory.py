"""`release_free_memory` gives freed C heap pages back: the resident size drops, as the operator's does after a
burst."""

from __future__ import annotations

import asyncio
import ctypes
from pathlib import Path

import pytest

from helmrelease.adapters import memory

CHUNK = 4096
CHUNKS = 16_384  # 64 MiB


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_heap_pages_go_back_to_the_system() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(CHUNK) for _ in range(CHUNKS)]
    for chunk in chunks:
        ctypes.memset(chunk, 1, CHUNK)  # touched: resident
    pinned = libc.malloc(CHUNK)  # above the others: the heap's top is in use, a plain free cannot shrink it
    for chunk in chunks:
        libc.free(chunk)
    try:
        before = resident_kib()
        assert memory.release_free_memory()
        after = resident_kib()
    finally:
        libc.free(pinned)
    assert before - after > CHUNK * CHUNKS // 1024 // 2, (before, after)


async def test_the_periodic_trim_runs_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[bool] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(True) or True)
    task = asyncio.create_task(memory.release_free_memory_periodically(0.01))
    while len(trims) < 3:
        assert not task.done()
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
