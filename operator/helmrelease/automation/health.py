"""Liveness, metrics and webhooks over HTTP: ``/healthz`` for the kubelet, ``/metrics`` for Prometheus,
``/hooks/<sender>`` for registries (``webhooks``), all from one server.

The loop is healthy while it runs and its last cycle finished within ``STALE_AFTER_INTERVALS`` intervals
(counting from the start until the first cycle finishes): a cycle stuck on a hung connection or a deadlock
then gets the container restarted, while one slow cycle does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry

from helmrelease.adapters.http_server import METRICS_PATH, HttpServer, PostRoute, Reply, Route, metrics_route

STALE_AFTER_INTERVALS: Final = 3
HEALTH_PATH: Final = "/healthz"


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


def _health_reply(healthy: Callable[[], bool]) -> Route:
    def reply() -> Reply:
        if healthy():
            return Reply(200, b"ok\n")
        return Reply(503, b"image-policy loop stalled or stopped\n")

    return reply


class Endpoints:
    """The health, metrics and webhook endpoints (one listener per distinct port). ``start`` then ``stop``."""

    def __init__(
        self,
        *,
        healthy: Callable[[], bool],
        metrics: CollectorRegistry,
        health_port: int | None,
        metrics_port: int | None,
        webhook_port: int | None = None,
        webhooks: Mapping[str, PostRoute] | None = None,
        host: str | None = None,
    ) -> None:
        routes: dict[int, dict[str, Route]] = {}
        if health_port is not None:
            routes.setdefault(health_port, {})[HEALTH_PATH] = _health_reply(healthy)
        if metrics_port is not None:
            routes.setdefault(metrics_port, {})[METRICS_PATH] = metrics_route(metrics)
        posts = {webhook_port: dict(webhooks)} if webhook_port is not None and webhooks else {}
        self._server = HttpServer(routes, posts=posts, host=host)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()
