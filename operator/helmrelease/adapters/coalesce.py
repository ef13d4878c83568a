"""One asyncio task per key, shared by every caller that asks for the same key: the one coalescer of the adapters.

The registry's per-cycle tag memo, digest caches and token cache keep outcomes; the chart fetcher shares only the
downloads in flight (its cache is on disk).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TaskMemo(Generic[K, V]):
    """Run ``factory()`` once per key and give its outcome to all callers, concurrent or later.

    ``max_entries`` bounds the memo as an LRU (None: unbounded, for memos that live one scan cycle).
    ``forget_failures`` drops a key whose task failed, so the next caller tries again; keeping failures
    instead means one broken registry is asked once per cycle, not once per HelmRelease. ``in_flight_only``
    drops every key as soon as its task is done, so only concurrent callers share it. Callers that are
    cancelled do not cancel the shared task (others may be waiting for it).
    """

    def __init__(
        self, *, max_entries: int | None = None, forget_failures: bool = True, in_flight_only: bool = False
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1 (or None for unbounded)")
        self._tasks: OrderedDict[K, asyncio.Task[V]] = OrderedDict()
        self._max_entries = max_entries
        self._forget_failures = forget_failures or in_flight_only
        self._in_flight_only = in_flight_only

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def peek(self, key: K) -> asyncio.Task[V] | None:
        """The task for ``key`` without running anything or touching the LRU order."""
        return self._tasks.get(key)

    def discard(self, key: K) -> None:
        """Forget ``key`` (e.g. an expired token) so the next ``run`` starts afresh."""
        self._tasks.pop(key, None)

    async def run(
        self, key: K, factory: Callable[[], Coroutine[Any, Any, V]], *, name: str | None = None
    ) -> V:
        """The outcome of the task for ``key``, started from ``factory()`` (named ``name``) if there is none."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(factory(), name=name)
            self._tasks[key] = task
            if self._forget_failures:
                task.add_done_callback(lambda done: self._drop_finished(key, done))
            while self._max_entries is not None and len(self._tasks) > self._max_entries:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(key)
        return await asyncio.shield(task)

    def _drop_finished(self, key: K, task: asyncio.Task[V]) -> None:
        # Reading the exception marks it retrieved: every caller may have been cancelled meanwhile.
        failed = task.cancelled() or task.exception() is not None
        if (failed or self._in_flight_only) and self._tasks.get(key) is task:
            del self._tasks[key]

    def cancel_pending(self) -> None:
        """Cancel tasks still running (on shutdown), so none outlives the session it uses."""
        for task in self._tasks.values():
            if not task.done():
                task.cancel()
