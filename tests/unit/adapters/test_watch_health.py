"""The liveness probe's view of kopf's watch streams: stalled, paused and quiet-but-alive streams told apart.

The verdict is a pure function (table tests). The hooks are driven through kopf's real ``infinite_watch`` against a
local HTTP server that plays the API server (a listing, then a watch that sends a bookmark and ends, or one that
hangs), so a kopf upgrade that moves the hooked functions fails here rather than in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from aiohttp import web
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import auth
from kopf._cogs.clients import watching as kopf_watching
from kopf._cogs.structs import credentials, references
from kopf._core.reactor import queueing

from helmrelease.adapters import kopf_decoding, watch_health
from helmrelease.adapters.watch_health import Stream, Verdict, WatchHealth, judge, server_timeout

HELMRELEASES = references.Resource("helm.fluxcd.io", "v1", "helmreleases", namespaced=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("streams", "now", "healthy"),
    [
        pytest.param([], 1010.0, True, id="no-stream-yet-within-the-bound"),
        pytest.param([], 1031.0, False, id="no-stream-ever-beyond-the-bound"),
        pytest.param([Stream("a", 1000.0)], 1030.0, True, id="quiet-exactly-the-bound"),
        pytest.param([Stream("a", 1000.0)], 1030.5, False, id="quiet-beyond-the-bound"),
        pytest.param([Stream("a", 1000.0, paused=True)], 9999.0, True, id="paused-by-peering"),
        pytest.param([Stream("a", 1029.0), Stream("b", 1000.0)], 1031.0, False, id="one-of-two-stalled"),
    ],
)
def test_a_stream_is_stalled_when_quiet_beyond_the_bound_and_not_paused(
    streams: list[Stream], now: float, healthy: bool
) -> None:
    assert judge(streams, now=now, started=1000.0, stall_after=30.0).healthy is healthy


def test_the_verdict_names_each_stalled_stream() -> None:
    verdict = judge(
        [
            Stream("helmreleases.helm.fluxcd.io in namespace apps", 900.0),
            Stream("secrets in namespace apps", 990),
        ],
        now=1000.0,
        started=0.0,
        stall_after=30.0,
    )
    assert verdict == Verdict(
        False,
        (
            "the watch of helmreleases.helm.fluxcd.io in namespace apps has delivered nothing (no event, no "
            "bookmark) for 100s (bound 30s)",
        ),
    )
    assert judge([], now=100.0, started=0.0, stall_after=30.0).problems == (
        "no watch stream is open (up for 100s)",
    )


@pytest.mark.parametrize(
    ("stall_after", "timeout"), [(180.0, 60), (30.0, 10), (7.0, 5), (1.0, 5), (3600.0, 300), (31.9, 10)]
)
def test_watch_requests_are_renewed_at_a_third_of_the_bound_in_whole_seconds(
    stall_after: float, timeout: int
) -> None:
    assert server_timeout(stall_after) == timeout


def test_the_health_follows_opened_delivered_paused_resumed_closed() -> None:
    clock = Clock()
    health = WatchHealth(30.0, clock)
    health.opened(HELMRELEASES, "apps")
    clock.now += 25
    health.delivered(HELMRELEASES, "apps")
    clock.now += 25
    assert health.verdict().healthy
    clock.now += 10
    assert not health.verdict().healthy
    health.pausing(HELMRELEASES, "apps")
    clock.now += 600
    assert health.verdict().healthy
    health.resumed(HELMRELEASES, "apps")  # the clock starts again when kopf resumes the stream
    clock.now += 29
    assert health.verdict().healthy
    health.resumed(HELMRELEASES, "apps")  # a reconnection of a stream that was not paused resets nothing
    clock.now += 2
    assert not health.verdict().healthy
    health.closed(HELMRELEASES, "apps")
    assert not health.verdict().healthy  # no stream at all, long after the start


def test_the_route_answers_200_or_503_with_the_problems() -> None:
    clock = Clock()
    health = WatchHealth(30.0, clock)
    route = watch_health.liveness_route(health)
    health.opened(HELMRELEASES, "apps")
    assert (route().status, route().body) == (200, b"ok\n")
    clock.now += 31
    reply = route()
    assert reply.status == 503
    assert b"the watch of helmreleases.helm.fluxcd.io in namespace apps has delivered nothing" in reply.body


class FakeApiServer:
    """A listing of one HelmRelease, then watch requests that send a bookmark and end, or hang without a byte."""

    def __init__(self) -> None:
        self.hang = False
        self.refuse = False  # every request answered 503, as by an API server that lost its backend
        self.quiet = False  # watch requests accepted and ended without a byte, as a quiet cluster's can be
        self.watches = 0
        self.released = asyncio.Event()  # set at teardown: a hung watch ends then

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response(
                {
                    "metadata": {"resourceVersion": "1"},
                    "items": [{"metadata": {"name": "one", "namespace": "apps", "uid": "u1"}}],
                }
            )
        if self.refuse:
            return web.json_response({"kind": "Status", "code": 503, "message": "gone"}, status=503)
        self.watches += 1
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        if self.hang:
            await self.released.wait()
            return response
        if self.quiet:
            await asyncio.sleep(0.05)
            await response.write_eof()
            return response
        bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(1 + self.watches)}}}
        await response.write(json.dumps(bookmark).encode() + b"\n")
        await response.write_eof()
        return response


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[FakeApiServer, kopf.OperatorSettings]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    vault = credentials.Vault()
    await vault.populate({"test": credentials.ConnectionInfo(server=f"http://127.0.0.1:{port}")})
    token = auth.vault_var.set(vault)
    settings = kopf.OperatorSettings()
    settings.watching.reconnect_backoff = 0.05
    settings.watching.inactivity_timeout = 60
    yield fake, settings
    fake.released.set()
    await vault.close()
    auth.vault_var.reset(token)
    await runner.cleanup()


async def consume(stream: AsyncIterator[Any], seen: list[Any]) -> None:
    async for item in stream:
        seen.append(item)


async def test_kopf_listing_and_bookmarks_count_as_deliveries_and_a_hung_stream_stalls(
    api_server: tuple[FakeApiServer, kopf.OperatorSettings],
) -> None:
    fake, settings = api_server
    health = WatchHealth(0.5)
    seen: list[Any] = []
    with watch_health.reporting_to(health):
        stream = kopf_watching.infinite_watch(settings=settings, resource=HELMRELEASES, namespace="apps")
        task = asyncio.create_task(consume(stream, seen))
        try:
            for _ in range(100):
                if fake.watches >= 3:
                    break
                await asyncio.sleep(0.05)
            assert fake.watches >= 3, seen
            assert kopf_watching.Bookmark.LISTED in seen
            assert any(isinstance(item, dict) and item.get("type") == "BOOKMARK" for item in seen)
            assert health.verdict().healthy
            fake.hang = True
            for _ in range(100):
                if not health.verdict().healthy:
                    break
                await asyncio.sleep(0.05)
            verdict = health.verdict()
            assert not verdict.healthy
            assert "helmreleases.helm.fluxcd.io in namespace apps" in verdict.problems[0]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # The stream is gone with its task: none is open, long after the start.
    problems = health.verdict().problems
    assert len(problems) == 1
    assert problems[0].startswith("no watch stream is open"), problems


async def test_a_quiet_stream_whose_watch_requests_the_server_accepts_is_alive_and_a_dead_server_stalls_it(
    api_server: tuple[FakeApiServer, kopf.OperatorSettings],
) -> None:
    fake, settings = api_server
    fake.quiet = True
    health = WatchHealth(0.5)
    with watch_health.reporting_to(health):
        stream = kopf_watching.infinite_watch(settings=settings, resource=HELMRELEASES, namespace="apps")
        task = asyncio.create_task(consume(stream, []))
        try:
            for _ in range(30):  # 1.5s, three bounds: no event and no bookmark after the listing
                await asyncio.sleep(0.05)
                assert health.verdict().healthy, health.verdict()
            assert fake.watches > 3
            # The server goes away: its requests fail (kopf retries them), nothing is accepted any more.
            settings.networking.error_backoffs = [0.1] * 100
            fake.refuse = True
            for _ in range(100):
                if not health.verdict().healthy:
                    break
                await asyncio.sleep(0.05)
            assert not health.verdict().healthy
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_stream_paused_by_peering_is_not_stalled_and_restarts_its_clock_when_resumed(
    api_server: tuple[FakeApiServer, kopf.OperatorSettings],
) -> None:
    fake, settings = api_server
    health = WatchHealth(0.3)
    paused = aiotoggles.ToggleSet(any)
    peering = await paused.make_toggle(True, name="a peer of higher priority")
    with watch_health.reporting_to(health):
        stream = kopf_watching.infinite_watch(
            settings=settings, resource=HELMRELEASES, namespace="apps", operator_paused=paused
        )
        task = asyncio.create_task(consume(stream, []))
        try:
            await asyncio.sleep(1.0)  # more than three bounds, paused all along
            assert fake.watches == 0
            assert health.verdict().healthy
            fake.hang = True
            await peering.turn_to(False)
            for _ in range(100):
                if fake.watches:
                    break
                await asyncio.sleep(0.02)
            assert health.verdict().healthy  # resumed just now: its clock restarted
            await asyncio.sleep(0.5)
            assert not health.verdict().healthy  # listed, then a watch that hangs
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_install_is_idempotent_and_leaves_the_bounded_decoder_installed() -> None:
    health = WatchHealth(30.0)
    kopf_decoding.install()
    with watch_health.reporting_to(health):
        hooked = (kopf_watching.infinite_watch, kopf_watching.streaming_block, kopf_api.request)
        watch_health.install(health)
        kopf_decoding.install()
        assert (kopf_watching.infinite_watch, kopf_watching.streaming_block, kopf_api.request) == hooked
        assert watch_health.installed()
        assert kopf_decoding.installed()


def test_an_accepted_watch_request_counts_for_its_own_stream_only() -> None:
    clock = Clock()
    health = WatchHealth(30.0, clock)
    secrets = references.Resource("", "v1", "secrets", namespaced=True)
    health.opened(HELMRELEASES, "apps", "/apis/helm.fluxcd.io/v1/namespaces/apps/helmreleases")
    health.opened(secrets, "apps", "/api/v1/namespaces/apps/secrets")
    clock.now += 31
    health.accepted("/apis/helm.fluxcd.io/v1/namespaces/apps/helmreleases")
    health.accepted("/api/v1/namespaces/other/secrets")
    assert health.verdict().problems == (
        "the watch of secrets in namespace apps has delivered nothing (no event, no bookmark) for 31s (bound 30s)",
    )


def test_kopf_still_looks_the_hooked_functions_up_at_call_time() -> None:
    # If this fails after a kopf upgrade, move watch_health.install to wherever kopf now streams.
    assert "watching.infinite_watch(" in inspect.getsource(queueing.watcher)
    assert "async with streaming_block(" in inspect.getsource(inspect.unwrap(kopf_watching.infinite_watch))
    assert "await request(" in inspect.getsource(kopf_api.stream)
    assert "params['watch'] = 'true'" in inspect.getsource(inspect.unwrap(kopf_watching.watch_objs))
    assert "resource.get_url(namespace=namespace, params=params)" in inspect.getsource(
        kopf_watching.watch_objs
    )
