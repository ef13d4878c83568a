"""A small HTTP server for the endpoints a process serves (liveness, metrics, webhooks): routes on one or more ports.

The server is I/O, so it lives with the adapters; what a route answers is decided by the caller, as a plain
`Reply`, without any of aiohttp's types. GET routes build a reply from nothing; POST routes (webhooks) see the
request in two steps: `admit` from its head alone (a bad token is refused before a byte of the body is read),
then `handle` with a body the server read within the route's size and time bounds. A body announced or found
larger than `max_body` is refused (413) as soon as that is known, a body that trickles in for longer than
`read_timeout` too (408), and at most `max_posts` bodies are read at once (503 beyond): a hostile sender costs
a bounded amount of memory and time, and the GET routes on the same loop keep answering. ``metrics_route`` is the one Prometheus
exposition both processes serve (the operator's ``--metrics-port`` and the sidecar's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

METRICS_PATH: Final = "/metrics"


@dataclass(frozen=True)
class Reply:
    """What a route answers: an HTTP status, the body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


#: What a route does: build the reply to a GET. It runs in a worker thread, so it must only read state that is
#: safe to read from one (prometheus_client's registries are): an exposition of thousands of series takes a second
#: of formatting, which must not stall the event loop.
Route = Callable[[], Reply]


def metrics_route(registry: CollectorRegistry) -> Route:
    """``/metrics``: the registry in Prometheus' text format."""

    def reply() -> Reply:
        return Reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    return reply


@dataclass(frozen=True)
class RequestHead:
    """A POST before its body: path, query parameters, headers (names lower-cased) and the peer's address."""

    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    remote: str | None = None


class Refusal(StrEnum):
    """Why the server refused a POST before the route saw its body."""

    TOO_LARGE = "too_large"  # announced or found larger than max_body
    TOO_SLOW = "too_slow"  # not all there within read_timeout
    BUSY = "busy"  # max_posts bodies were being read already


class PostRoute(Protocol):
    """A POST route: its bounds, the check of the head, the answer to a refusal, and the handling of a body."""

    @property
    def max_body(self) -> int: ...

    @property
    def read_timeout(self) -> float: ...

    def admit(self, head: RequestHead) -> Reply | None:
        """A reply that ends the request before its body is read (401), or None to read on."""

    def refuse(self, head: RequestHead, refusal: Refusal) -> Reply:
        """The reply to a request the server refused (the route counts and logs it)."""

    async def handle(self, head: RequestHead, body: bytes) -> Reply: ...


_REFUSAL_STATUS = {Refusal.TOO_LARGE: 413, Refusal.TOO_SLOW: 408, Refusal.BUSY: 503}
DEFAULT_MAX_POSTS = 32


def refusal_status(refusal: Refusal) -> int:
    """The HTTP status of a refusal: 413, 408 or 503."""
    return _REFUSAL_STATUS[refusal]


def _response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type})


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return _response(await asyncio.to_thread(route))

    return handle


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` (it is never held whole beyond that)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _post_handler(
    route: PostRoute, reading: asyncio.Semaphore
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        head = RequestHead(
            request.path,
            dict(request.query.items()),
            {key.lower(): value for key, value in request.headers.items()},
            request.remote,
        )
        length = request.content_length
        if length is not None and length > route.max_body:
            return _response(route.refuse(head, Refusal.TOO_LARGE))
        early = route.admit(head)
        if early is not None:
            return _response(early)
        if reading.locked():
            return _response(route.refuse(head, Refusal.BUSY))
        async with reading:
            try:
                async with asyncio.timeout(route.read_timeout):
                    body = await _read_body(request, route.max_body)
            except TimeoutError:
                return _response(route.refuse(head, Refusal.TOO_SLOW))
        if body is None:
            return _response(route.refuse(head, Refusal.TOO_LARGE))
        return _response(await route.handle(head, body))

    return handle


class HttpServer:
    """GET and POST routes by port and path; a path not routed on a port is a 404. `start` then `stop`.

    ``max_posts`` bounds the POST bodies being read at once, over all ports.
    """

    def __init__(
        self,
        routes: Mapping[int, Mapping[str, Route]],
        *,
        posts: Mapping[int, Mapping[str, PostRoute]] | None = None,
        host: str | None = None,
        max_posts: int = DEFAULT_MAX_POSTS,
    ) -> None:
        self._routes = routes
        self._posts = posts or {}
        self._host = host
        self._max_posts = max_posts
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        reading = asyncio.Semaphore(self._max_posts)
        for port in dict.fromkeys([*self._routes, *self._posts]):
            app = web.Application()
            app.add_routes(
                [web.get(path, _handler(route)) for path, route in self._routes.get(port, {}).items()]
            )
            app.add_routes(
                [
                    web.post(path, _post_handler(route, reading))
                    for path, route in self._posts.get(port, {}).items()
                ]
            )
            # Bodies are taken as sent: a gzip bomb stays a small, undecodable body (none of the senders
            # compresses), and the size bound holds for what is actually kept.
            runner = web.AppRunner(app, access_log=None, auto_decompress=False)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, self._host, port).start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
