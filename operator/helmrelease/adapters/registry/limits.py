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
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

#: How long an announced budget holds when the registry says neither its window nor its reset.
DEFAULT_BUDGET_HORIZON = 60.0

#: How many finish times of budgeted requests are kept per kind (far more than can overlap one request).
_FINISHED_KEPT = 256


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
    """What the registry last said about one kind of request: ``left`` more may go before ``until``, spread
    evenly over the time left, the next no earlier than ``next_at``. When ``until`` passes the budget lapses
    (it is renewed): requests go at the configured rate until an answer announces the new one.
    ``source_sent`` is when the request whose answer set it was sent: an older request's answer, arriving
    later, is stale and does not replace it."""

    until: float
    left: int
    next_at: float
    source_sent: float

    def wait(self, now: float) -> float:
        """How long until a request may go (0.0: now)."""
        if now >= self.until:
            return 0.0
        if self.left <= 0:
            return self.until - now
        return max(0.0, self.next_at - now)

    def take(self, now: float) -> float:
        """0.0 and a place taken, or how long to wait before asking again."""
        wait = self.wait(now)
        if wait == 0.0 and now < self.until:
            self.next_at = now + (self.until - now) / self.left
            self.left -= 1
        return wait


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
        # When recent requests of each kind finished: an answer's count may predate some of them.
        self._finished: dict[str, deque[float]] = {}
        self._changed = asyncio.Event()  # set (and replaced) whenever a budget is announced

    def pause(self, seconds: float) -> None:
        """Hold every request to this registry for ``seconds``: a Retry-After speaks for the whole host."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe_budget(
        self, kind: str, remaining: int, seconds: float | None, *, spent: bool, sent_at: float | None = None
    ) -> None:
        """The registry says ``remaining`` requests of ``kind`` are left for ``seconds`` (None: unsaid), in
        answer to a request sent at ``sent_at`` (``slot``'s value; None: now).

        Requests of that kind already in flight will spend some of it, so they are taken off first; the
        one this answers (``spent``: it was a spending request, still holding its slot) is not among them.
        So are those that finished after this one was sent: the registry may have counted them after it
        answered (answers overtake each other), and counting them twice only errs on the slow side.
        Requests waiting for this budget look again at once.
        """
        now = self._clock()
        sent = now if sent_at is None else sent_at
        budget = self._budgets.get(kind)
        if budget is not None and budget.until > now and sent < budget.source_sent:
            return  # a slower answer to an earlier request: the budget it reports is already out of date
        horizon = seconds if seconds is not None and seconds > 0 else DEFAULT_BUDGET_HORIZON
        finished_since = sum(1 for at in self._finished.get(kind, ()) if at > sent)
        others = max(0, self._in_flight[kind] - (1 if spent else 0)) + finished_since
        usable = max(0, remaining - others)
        next_at = budget.next_at if budget is not None and budget.until > now else now
        self._budgets[kind] = Budget(now + horizon, usable, min(next_at, now + horizon), sent)
        self._changed.set()
        self._changed = asyncio.Event()

    def budget_wait(self, kind: str, *, take: bool = True) -> tuple[float, str]:
        """How long a request spending ``kind`` must wait now (0.0: it may go, and with ``take`` it took
        its place), and why."""
        budget = self._budgets.get(kind)
        if budget is None:
            return 0.0, ""
        now = self._clock()
        if budget.until <= now:
            del self._budgets[kind]
            return 0.0, ""
        wait = budget.take(now) if take else budget.wait(now)
        return wait, "the registry's announced request budget is spent"

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
    ) -> AsyncIterator[float]:
        """Wait for rate, budget (of ``budget_kind``, for requests that spend one) and any pause, then hold
        a free slot for one request; gives the time it was granted (for ``observe_budget``).
        ``LimitTooLong`` instead of a wait longer than ``max_wait``."""
        delay, reason = self.reserve()
        if max_wait is not None and delay > max_wait:
            raise LimitTooLong(delay, reason)
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            # Wait for the budget outside a slot (other kinds of request may go meanwhile), then look again
            # holding one: an answer that came in while this one queued for a slot may have spent it.
            while budget_kind is not None:
                wait, reason = self.budget_wait(budget_kind, take=False)
                if wait <= 0:
                    break
                if max_wait is not None and wait > max_wait:
                    raise LimitTooLong(wait, reason)
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
            await self._slots.acquire()
            if budget_kind is None or self.budget_wait(budget_kind)[0] <= 0:
                break
            self._slots.release()
        try:
            paused = self._paused_until - self._clock()
            if paused > 0:
                if max_wait is not None and paused > max_wait:
                    raise LimitTooLong(paused, "the registry asked us to wait (Retry-After)")
                await asyncio.sleep(paused)
            kind = budget_kind or ""
            self._in_flight[kind] += 1
            try:
                yield self._clock()
            finally:
                self._in_flight[kind] -= 1
                if budget_kind is not None:
                    self._finished.setdefault(kind, deque(maxlen=_FINISHED_KEPT)).append(self._clock())
        finally:
            self._slots.release()
