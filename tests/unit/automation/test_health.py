"""Liveness rule and the HTTP endpoints the kubelet and Prometheus read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from tests.support.procs import free_port

from helmrelease.automation.health import Endpoints, Heartbeat, is_healthy
from helmrelease.automation.webhooks import WebhookMetrics, hook_routes


@pytest.mark.parametrize(
    ("now", "last_finished", "running", "healthy"),
    [
        pytest.param(100.0, None, True, True, id="starting"),
        pytest.param(100.0 + 3 * 60, None, True, True, id="first-cycle-within-three-intervals"),
        pytest.param(100.0 + 3 * 60 + 1, None, True, False, id="first-cycle-too-slow"),
        pytest.param(1000.0, 1000.0 - 179, True, True, id="recent-cycle"),
        pytest.param(1000.0, 1000.0 - 181, True, False, id="stale-cycle"),
        pytest.param(1000.0, 999.0, False, False, id="loop-stopped"),
    ],
)
def test_is_healthy(now: float, last_finished: float | None, running: bool, healthy: bool) -> None:
    assert (
        is_healthy(now=now, started=100.0, last_finished=last_finished, interval=60, running=running)
        is healthy
    )


def test_heartbeat_reads_the_clock() -> None:
    heartbeat = Heartbeat(interval=60, started=0.0, running=True)
    assert heartbeat.healthy(now=180.0)
    assert not heartbeat.healthy(now=181.0)
    heartbeat.last_finished = 170.0
    assert heartbeat.healthy(now=181.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


@pytest.mark.parametrize("same_port", [False, True], ids=["two-ports", "one-port"])
async def test_endpoints(session: aiohttp.ClientSession, same_port: bool) -> None:
    registry = CollectorRegistry()
    Counter("probe_checks", "checks made", registry=registry).inc()
    state = {"healthy": True}
    health_port = free_port()
    metrics_port = health_port if same_port else free_port()
    endpoints = Endpoints(
        healthy=lambda: state["healthy"],
        metrics=registry,
        health_port=health_port,
        metrics_port=metrics_port,
        host="127.0.0.1",
    )
    await endpoints.start()
    try:
        assert await _get(session, health_port, "/healthz") == (200, "ok\n")
        state["healthy"] = False
        status, body = await _get(session, health_port, "/healthz")
        assert (status, body) == (503, "image-policy loop stalled or stopped\n")
        status, exposition = await _get(session, metrics_port, "/metrics")
        assert status == 200
        assert "probe_checks_total 1.0" in exposition
        if not same_port:
            assert (await _get(session, health_port, "/metrics"))[0] == 404
    finally:
        await endpoints.stop()


async def test_an_endpoint_can_be_off(session: aiohttp.ClientSession) -> None:
    port = free_port()
    endpoints = Endpoints(
        healthy=lambda: True,
        metrics=CollectorRegistry(),
        health_port=port,
        metrics_port=None,
        host="127.0.0.1",
    )
    await endpoints.start()
    try:
        assert (await _get(session, port, "/metrics"))[0] == 404
    finally:
        await endpoints.stop()


async def test_webhooks_are_served_beside_health_and_metrics(session: aiohttp.ClientSession) -> None:
    registry = CollectorRegistry()
    notified: list[object] = []
    health_port, webhook_port = free_port(), free_port()
    endpoints = Endpoints(
        healthy=lambda: True,
        metrics=registry,
        health_port=health_port,
        metrics_port=health_port,
        webhook_port=webhook_port,
        webhooks=hook_routes("t0ken", notified.append, WebhookMetrics.create(registry)),
        host="127.0.0.1",
    )
    await endpoints.start()
    try:
        body = b'{"repository": {"repo_name": "team/app"}, "push_data": {"tag": "1.2.3"}}'
        url = f"http://127.0.0.1:{webhook_port}/hooks/dockerhub?token=t0ken"
        async with session.post(url, data=body) as response:
            assert response.status == 202
        assert len(notified) == 1
        status, exposition = await _get(session, health_port, "/metrics")
        assert status == 200
        assert 'helmrelease_webhook_requests_total{outcome="accepted",receiver="dockerhub"} 1.0' in exposition
        assert (await _get(session, webhook_port, "/healthz"))[0] == 404
    finally:
        await endpoints.stop()
