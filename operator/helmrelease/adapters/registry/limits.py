"""Politeness per registry: a concurrency cap, a token-bucket rate, host-wide pauses, and request budgets the
registry announces (backoff: ``adapters.backoff``).

Budgets: a registry that says how many requests remain (``RateLimit-Remaining``, Docker Hub style, with the
window or ``RateLimit-Reset``) gets them spread evenly over the time left, counting the requests already in
flight, so the client slows down before the 429 instead of after it. A budget is per kind of request (the
manifests a response was about) and paces GETs only: Docker Hub counts manifest GETs, and HEADs, which is
how the scan re-checks tags, are free. A ``Retry-After`` on any response pauses the whole host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

#: How long an announced budget holds when the registry says neither its window nor its reset.
DEFAULT_BUDGET_HORIZON = 60.0


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


@dataclass
class Budget:
    """What the registry last said about one kind of request: until ``until``, requests go ``spacing``
    seconds apart, the next no earlier than ``next_at``; none before ``blocked_until`` (budget spent). When
    ``until`` passes the budget lapses (it is renewed): requests go at the configured rate until an answer
    announces the new one."""

    until: float
    spacing: float
    next_at: float
    blocked_until: float = 0.0

    def take(self, now: float) -> float:
        """0.0 and a place taken, or how long to wait before asking again."""
        if now >= self.until:
            return 0.0
        wait = max(self.blocked_until, self.next_at) - now
        if wait > 0:
            return wait
        self.next_at = now + self.spacing
        return 0.0


class LimitTooLong(Exception):
    """Waiting for the host's pause or budget would take ``seconds``, longer than the caller accepts."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(f"{reason} for the next {seconds:.0f}s")
        self.seconds = seconds
        self.reason = reason


class HostLimiter:
    """The limits for one registry. A failing or slow registry uses up only its own slots and budget."""

    def __init__(
        self, concurrency: int, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(rate, burst, clock())
        self._paused_until = 0.0
        self._budgets: dict[str, Budget] = {}
        self._in_flight: Counter[str] = Counter()
        self._changed = asyncio.Event()  # set (and replaced) whenever a budget is announced

    def pause(self, seconds: float) -> None:
        """Hold every request to this registry for ``seconds``: a Retry-After speaks for the whole host."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe_budget(self, kind: str, remaining: int, seconds: float | None, *, spent: bool) -> None:
        """The registry says ``remaining`` requests of ``kind`` are left for ``seconds`` (None: unsaid).

        Requests of that kind already in flight will spend some of it, so they are taken off first; the
        one this answers (``spent``: it was a spending request, still holding its slot) is not among them.
        Requests waiting for this budget look again at once.
        """
        now = self._clock()
        horizon = seconds if seconds is not None and seconds > 0 else DEFAULT_BUDGET_HORIZON
        usable = remaining - max(0, self._in_flight[kind] - (1 if spent else 0))
        budget = self._budgets.get(kind)
        next_at = budget.next_at if budget is not None and budget.until > now else now
        if usable <= 0:
            self._budgets[kind] = Budget(now + horizon, 0.0, next_at, blocked_until=now + horizon)
        else:
            self._budgets[kind] = Budget(
                now + horizon, horizon / usable, min(next_at, now + horizon / usable)
            )
        self._changed.set()
        self._changed = asyncio.Event()

    def budget_wait(self, kind: str) -> tuple[float, str]:
        """How long a request spending ``kind`` must wait now (0.0: it took its place), and why."""
        budget = self._budgets.get(kind)
        if budget is None:
            return 0.0, ""
        now = self._clock()
        if budget.until <= now:
            del self._budgets[kind]
            return 0.0, ""
        return budget.take(now), "the registry's announced request budget is spent"

    def reserve(self) -> tuple[float, str]:
        """Take a place at the configured rate: how long to wait before sending, and what imposes it."""
        now = self._clock()
        delay, reason = self._bucket.reserve(now), "the configured request rate"
        paused = self._paused_until - now
        if paused > delay:
            delay, reason = paused, "the registry asked us to wait (Retry-After)"
        return delay, reason

    @asynccontextmanager
    async def slot(
        self, budget_kind: str | None = None, max_wait: float | None = None
    ) -> AsyncIterator[None]:
        """Wait for rate, budget (of ``budget_kind``, for requests that spend one) and any pause, then hold
        a free slot for one request. ``LimitTooLong`` instead of a wait longer than ``max_wait``."""
        delay, reason = self.reserve()
        if max_wait is not None and delay > max_wait:
            raise LimitTooLong(delay, reason)
        if delay > 0:
            await asyncio.sleep(delay)
        while budget_kind is not None:
            wait, reason = self.budget_wait(budget_kind)
            if wait <= 0:
                break
            if max_wait is not None and wait > max_wait:
                raise LimitTooLong(wait, reason)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)
        async with self._slots:
            paused = self._paused_until - self._clock()
            if paused > 0:
                if max_wait is not None and paused > max_wait:
                    raise LimitTooLong(paused, "the registry asked us to wait (Retry-After)")
                await asyncio.sleep(paused)
            kind = budget_kind or ""
            self._in_flight[kind] += 1
            try:
                yield
            finally:
                self._in_flight[kind] -= 1
