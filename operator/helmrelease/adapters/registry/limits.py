"""Politeness per registry: a concurrency cap, a token-bucket rate, host-wide pauses (backoff: ``adapters.backoff``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst``. Reservations may go into debt, so
    concurrent callers queue up behind each other instead of all waking at the same instant."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - 1.0
        self._updated = now
        return max(0.0, -self._tokens / self.rate)


class HostLimiter:
    """The limits for one registry. A failing or slow registry uses up only its own slots and budget."""

    def __init__(
        self, concurrency: int, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(rate, burst, clock())
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every request to this registry for ``seconds``: a Retry-After speaks for the whole host."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for budget and a free slot, and any pause in force, then hold the slot for one request."""
        delay = self._bucket.reserve(self._clock())
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._slots:
            paused = self._paused_until - self._clock()
            if paused > 0:
                await asyncio.sleep(paused)
            yield
