"""Liveness and metrics over HTTP: ``/healthz`` for the kubelet, ``/metrics`` for Prometheus.

The loop is healthy while it runs and its last cycle finished within ``STALE_AFTER_INTERVALS`` intervals
(counting from the start until the first cycle finishes): a cycle stuck on a hung connection or a deadlock
then gets the container restarted, while one slow cycle does not.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

STALE_AFTER_INTERVALS: Final = 3
HEALTH_PATH: Final = "/healthz"
METRICS_PATH: Final = "/metrics"


def is_healthy(
    *, now: float, started: float, last_finished: float | None, interval: float, running: bool
) -> bool:
    """Running, and a cycle finished (or the loop started) no more than three intervals ago."""
    reference = last_finished if last_finished is not None else started
    return running and now - reference <= STALE_AFTER_INTERVALS * interval


@dataclass
class Heartbeat:
    """What the loop reports about itself; the only state the health endpoint reads."""

    interval: float
    started: float
    last_finished: float | None = None
    running: bool = False

    def healthy(self, now: float | None = None) -> bool:
        return is_healthy(
            now=time.monotonic() if now is None else now,
            started=self.started,
            last_finished=self.last_finished,
            interval=self.interval,
            running=self.running,
        )


def _health_handler(healthy: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="image-policy loop stalled or stopped\n")

    return handle


def _metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle


class Endpoints:
    """The health and metrics servers (one server when both use the same port). ``start`` then ``stop``."""

    def __init__(
        self,
        *,
        healthy: Callable[[], bool],
        metrics: CollectorRegistry,
        health_port: int | None,
        metrics_port: int | None,
        host: str | None = None,
    ) -> None:
        routes: dict[int, list[web.RouteDef]] = {}
        if health_port is not None:
            routes.setdefault(health_port, []).append(web.get(HEALTH_PATH, _health_handler(healthy)))
        if metrics_port is not None:
            routes.setdefault(metrics_port, []).append(web.get(METRICS_PATH, _metrics_handler(metrics)))
        self._routes = routes
        self._host = host
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for port, routes in self._routes.items():
            app = web.Application()
            app.add_routes(routes)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, self._host, port).start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
