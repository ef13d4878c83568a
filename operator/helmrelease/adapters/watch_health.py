"""Whether kopf's watch streams are alive: what the operator's liveness probe (``--liveness``) answers.

kopf's own liveness endpoint answers 200 as long as its event loop runs: a watch that has stopped delivering (a
half-open connection, an API server that has been unreachable for minutes, a stream kopf keeps reconnecting in
vain) stayed green, and the operator silently stopped reconciling. This adapter sits on kopf's watch streams (it
replaces ``kopf._cogs.clients.watching.infinite_watch`` and ``streaming_block`` and ``kopf._cogs.clients.api.request``,
which kopf looks up at call time) and remembers, per stream (resource and namespace), when it last showed life: an
event, a listing, a bookmark, or the API server accepting one of its watch requests. kopf's watch requests end at
a server-side timeout of a third of the bound, and the next one follows at once, so a quiet stream shows life
every third of the bound while the API server answers (bookmarks alone would not do: the API server sends them
only once its cache has moved past the watch's resource version, which a quiet cluster may not do for minutes).
A stream that has shown no life for longer than ``stall_after`` is stalled, and the probe fails naming it.

A stream paused by peering (a peer of higher priority runs) is not stalled however long it is quiet: kopf closes
it on purpose. Its clock starts again when kopf resumes it. The operator also counts as stalled when it has run
longer than ``stall_after`` and kopf has opened no watch at all (an API server unreachable from the start).

``tests/unit/adapters/test_watch_health.py`` fails if a kopf upgrade moves the replaced functions.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import watching as kopf_watching

from helmrelease.adapters.http_server import Reply, Route

_INSTALLED: Final = "_helmrelease_watch_health"
#: The server-side timeout of a watch request is this part of the stall bound (at most kopf's 300s), so that even
#: a quiet stream makes a new watch request, which the API server accepts, well within the bound.
RENEWALS_PER_BOUND: Final = 3
#: A watch request shorter than this would get no bookmark (the API server sends it ~2s before the deadline).
SERVER_TIMEOUT_MIN: Final = 5
SERVER_TIMEOUT_MAX: Final = 300


def server_timeout(stall_after: float) -> int:
    """The ``timeoutSeconds`` of kopf's watch requests for a stall bound: a third of it, within 5s..300s (whole
    seconds: the API server refuses a fraction)."""
    return min(SERVER_TIMEOUT_MAX, max(SERVER_TIMEOUT_MIN, int(stall_after // RENEWALS_PER_BOUND)))


@dataclass
class Stream:
    """One of kopf's watch streams: what it watches, when it last delivered, whether peering paused it."""

    what: str
    last_delivery: float
    paused: bool = False


@dataclass(frozen=True)
class Verdict:
    """The probe's answer: healthy or not, and a line per stalled stream (or why there is none)."""

    healthy: bool
    problems: tuple[str, ...] = ()


def judge(streams: list[Stream], *, now: float, started: float, stall_after: float) -> Verdict:
    """Stalled: a running stream quiet for more than ``stall_after`` seconds, or no stream at all that long."""
    if not streams:
        if now - started > stall_after:
            return Verdict(False, (f"no watch stream is open (up for {now - started:.0f}s)",))
        return Verdict(True)
    problems = tuple(
        f"the watch of {stream.what} has delivered nothing (no event, no bookmark) for "
        f"{now - stream.last_delivery:.0f}s (bound {stall_after:g}s)"
        for stream in streams
        if not stream.paused and now - stream.last_delivery > stall_after
    )
    return Verdict(not problems, problems)


def _describe(resource: Any, namespace: str | None) -> str:
    where = f"in namespace {namespace}" if namespace else "cluster-wide"
    plural = getattr(resource, "plural", None) or str(resource)
    group = getattr(resource, "group", "") or ""
    return f"{plural}{'.' + group if group else ''} {where}"


class WatchHealth:
    """The watch streams kopf runs, as the probe sees them. Written on the event loop, read from the probe's
    worker thread: every access holds the lock."""

    def __init__(self, stall_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after = stall_after
        self._clock = clock
        self.started = clock()
        self._streams: dict[tuple[Any, str | None], Stream] = {}
        #: The URL path of each stream's watch requests, to tell which stream a request is for.
        self._paths: dict[str, tuple[Any, str | None]] = {}
        self._lock = threading.Lock()

    def opened(self, resource: Any, namespace: str | None, path: str | None = None) -> None:
        with self._lock:
            self._streams[(resource, namespace)] = Stream(_describe(resource, namespace), self._clock())
            if path is not None:
                self._paths[path] = (resource, namespace)

    def accepted(self, path: str) -> None:
        """The API server accepted a watch request at ``path`` (a URL path, without the query)."""
        with self._lock:
            key = self._paths.get(path)
            stream = self._streams.get(key) if key is not None else None
            if stream is not None:
                stream.last_delivery = self._clock()

    def delivered(self, resource: Any, namespace: str | None) -> None:
        with self._lock:
            stream = self._streams.get((resource, namespace))
            if stream is not None:
                stream.last_delivery = self._clock()

    def pausing(self, resource: Any, namespace: str | None) -> None:
        with self._lock:
            stream = self._streams.get((resource, namespace))
            if stream is not None:
                stream.paused = True

    def resumed(self, resource: Any, namespace: str | None) -> None:
        """Unpaused: quiet from now on counts again (a resumed stream relists at once)."""
        with self._lock:
            stream = self._streams.get((resource, namespace))
            if stream is not None and stream.paused:
                stream.paused = False
                stream.last_delivery = self._clock()

    def closed(self, resource: Any, namespace: str | None) -> None:
        with self._lock:
            self._streams.pop((resource, namespace), None)
            for path in [path for path, key in self._paths.items() if key == (resource, namespace)]:
                del self._paths[path]

    def verdict(self) -> Verdict:
        with self._lock:
            streams = [Stream(s.what, s.last_delivery, s.paused) for s in self._streams.values()]
        return judge(streams, now=self._clock(), started=self.started, stall_after=self.stall_after)


def liveness_route(health: WatchHealth) -> Route:
    """The probe: 200 while every watch stream lives, 503 naming each stalled one."""

    def reply() -> Reply:
        verdict = health.verdict()
        if verdict.healthy:
            return Reply(200, b"ok\n")
        return Reply(503, ("".join(f"{problem}\n" for problem in verdict.problems)).encode())

    return reply


#: The health that kopf's watch streams report to; None until ``install``.
_current: WatchHealth | None = None


def _infinite_watch(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        health = _current
        resource, namespace = kwargs.get("resource"), kwargs.get("namespace")
        if health is not None:
            health.opened(resource, namespace, _watch_path(resource, namespace))
        try:
            async for item in original(**kwargs):
                if health is not None:
                    health.delivered(resource, namespace)
                yield item
        finally:
            if health is not None:
                health.closed(resource, namespace)

    setattr(infinite_watch, _INSTALLED, True)
    infinite_watch.__wrapped__ = original  # type: ignore[attr-defined]
    return infinite_watch


def _watch_path(resource: Any, namespace: str | None) -> str | None:
    get_url = getattr(resource, "get_url", None)
    return str(get_url(namespace=namespace)).split("?", 1)[0] if get_url is not None else None


def _request(original: Callable[..., Any]) -> Callable[..., Any]:
    async def request(*args: Any, **kwargs: Any) -> Any:
        response = await original(*args, **kwargs)  # raises for a refused connection or an error status
        health = _current
        url = str(kwargs.get("url", ""))
        if health is not None and "watch=true" in url:
            health.accepted(url.split("?", 1)[0])
        return response

    request.__dict__.update(original.__dict__)  # other hooks' marks (kopf_decoding's) stay visible
    setattr(request, _INSTALLED, True)
    request.__wrapped__ = original  # type: ignore[attr-defined]
    return request


def _streaming_block(original: Callable[..., Any]) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def streaming_block(**kwargs: Any) -> AsyncIterator[Any]:
        health = _current
        resource, namespace = kwargs.get("resource"), kwargs.get("namespace")
        paused = kwargs.get("operator_paused")
        if health is not None and paused is not None and paused.is_on():
            health.pausing(resource, namespace)
        async with original(**kwargs) as waiter:
            if health is not None:
                health.resumed(resource, namespace)
            yield waiter

    setattr(streaming_block, _INSTALLED, True)
    streaming_block.__wrapped__ = original  # type: ignore[attr-defined]
    return streaming_block


def _hooked(function: Any) -> bool:
    """Whether our hook is anywhere in the chain of wrappers (another hook may have wrapped ours)."""
    while function is not None:
        if getattr(function, _INSTALLED, False):
            return True
        function = getattr(function, "__wrapped__", None)
    return False


def install(health: WatchHealth) -> None:
    """Report kopf's watch streams to ``health`` from now on; call before ``kopf.operator`` starts its watches."""
    global _current
    _current = health
    if not _hooked(kopf_watching.infinite_watch):
        kopf_watching.infinite_watch = _infinite_watch(kopf_watching.infinite_watch)
    if not _hooked(kopf_watching.streaming_block):
        kopf_watching.streaming_block = _streaming_block(kopf_watching.streaming_block)
    if not _hooked(kopf_api.request):
        kopf_api.request = _request(kopf_api.request)


def installed() -> bool:
    return all(
        _hooked(function)
        for function in (kopf_watching.infinite_watch, kopf_watching.streaming_block, kopf_api.request)
    )


@contextlib.contextmanager
def reporting_to(health: WatchHealth) -> Iterator[WatchHealth]:
    """``install`` for the duration of a block (tests), then report to nobody again."""
    global _current
    install(health)
    try:
        yield health
    finally:
        _current = None
