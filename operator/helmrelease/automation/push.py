"""Rescans on push: the releases that use a pushed repository are scanned at once, a burst of pushes once.

Webhooks ``notify`` the repositories a push named and return at once (the sender is answered before any scan);
one worker rescans them: it waits ``settle`` seconds after the first push so a burst (a CI job pushing
``1.2.3``, ``1.2`` and ``1`` of several images) joins the same rescan, then takes every repository pending
and rescans them together; pushes that arrive meanwhile gather for the next rescan. So at most one rescan runs
and one gathers, whatever the rate of pushes, and at most ``max_pending`` repositories wait (beyond that a
push is dropped with a log line: the polling cycle, which stays, picks it up).

This is not ``adapters.coalesce.TaskMemo``: that shares one outcome among callers asking for the same work,
while here different requests accumulate into one run and nobody waits for its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from helmrelease.automation.notifications import Pushed
from helmrelease.automation.webhooks import WebhookMetrics
from helmrelease.images.reference import CanonicalName

_log = logging.getLogger(__name__)

#: Seconds a rescan waits after the first push of a burst: short beside the 2 s push-to-update target.
DEFAULT_SETTLE: Final = 0.2
DEFAULT_MAX_PENDING: Final = 1024

Rescan = Callable[[frozenset[CanonicalName]], Awaitable[object]]


class PushRescans:
    """Gathers pushed repositories and rescans them, one rescan at a time; ``run`` is the worker."""

    def __init__(
        self,
        rescan: Rescan,
        metrics: WebhookMetrics,
        *,
        settle: float = DEFAULT_SETTLE,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settle < 0:
            raise ValueError("settle must not be negative")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._rescan = rescan
        self._metrics = metrics
        self._settle = settle
        self._max_pending = max_pending
        self._clock = clock
        self._pending: set[CanonicalName] = set()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> frozenset[CanonicalName]:
        return frozenset(self._pending)

    def notify(self, pushed: Iterable[Pushed]) -> None:
        """Rescan the repositories of ``pushed`` soon (returns at once)."""
        dropped = []
        for item in pushed:
            if item.name in self._pending or len(self._pending) < self._max_pending:
                self._pending.add(item.name)
            else:
                dropped.append(str(item.name))
        if dropped:
            _log.warning(
                "push rescans: %d repositories already waiting; %s left to the next scan cycle",
                len(self._pending),
                ", ".join(dropped),
            )
        if self._pending:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Rescan what was pushed until ``stop`` is set; a failing rescan is logged, never the end."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                if stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), self._settle)
                if stop.is_set():
                    return
                await self.rescan_pending()
        finally:
            stopping.cancel()

    async def rescan_pending(self) -> frozenset[CanonicalName]:
        """Take every pending repository and rescan them together (what ``run`` does after settling)."""
        self._wake.clear()
        names, self._pending = frozenset(self._pending), set()
        if not names:
            return names
        started = self._clock()
        self._metrics.rescans.inc()
        try:
            await self._rescan(names)
        except Exception:
            _log.exception("push rescan of %s failed", ", ".join(sorted(map(str, names))))
        finally:
            self._metrics.rescan_seconds.observe(self._clock() - started)
        return names
