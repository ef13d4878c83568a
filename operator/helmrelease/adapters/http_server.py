"""A small HTTP server for the endpoints a process serves (liveness, metrics): GET routes on one or more ports.

The server is I/O, so it lives with the adapters; what a route answers is decided by the caller, as a plain
`Reply`, without any of aiohttp's types. ``metrics_route`` is the one Prometheus exposition both processes serve
(the operator's ``--metrics-port`` and the sidecar's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

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


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        reply = await asyncio.to_thread(route)
        return web.Response(
            status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
        )

    return handle


class HttpServer:
    """GET routes by port and path; a path not routed on a port is a 404. `start` then `stop`."""

    def __init__(self, routes: Mapping[int, Mapping[str, Route]], *, host: str | None = None) -> None:
        self._routes = routes
        self._host = host
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for port, paths in self._routes.items():
            app = web.Application()
            app.add_routes([web.get(path, _handler(route)) for path, route in paths.items()])
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, self._host, port).start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
