"""The index.yaml size check before helm reads a repository: refused past the limit, with or without a
Content-Length, stopped at the deadline, and silent about every other failure, which helm reports in its words."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helmrelease.adapters import charts, helm
from helmrelease.adapters.credentials import BasicCredentials

LIMIT = 1000


async def _sized(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    if request.path.startswith("/chunked/"):
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(size // 100):
            await response.write(b"x" * 100)
        await response.write_eof()
        return response
    return web.Response(body=b"x" * size)


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["status"]), body=b"x" * (LIMIT * 2))


async def _stall(_: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="late")


async def _private(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Basic " + BasicCredentials("robot", "pw").token:
        return web.Response(status=401)
    return web.Response(body=b"x" * (LIMIT + 1))


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(
        [
            web.get("/sized/{size}/index.yaml", _sized),
            web.get("/chunked/{size}/index.yaml", _sized),
            web.get("/status/{status}/index.yaml", _status),
            web.get("/stall/index.yaml", _stall),
            web.get("/private/index.yaml", _private),
        ]
    )
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield f"http://127.0.0.1:{test_server.port}"
    finally:
        await test_server.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("size", "refused"), [(LIMIT, False), (LIMIT + 100, True), (LIMIT * 50, True)])
async def test_an_index_over_the_limit_is_refused(
    server: str, size: int, refused: bool, chunked: bool
) -> None:
    repository = f"{server}/{'chunked' if chunked else 'sized'}/{size}/"
    source = charts.RepositoryChart(repository, "app", "1.0.0")
    if not refused:
        await charts.check_index_size(source, LIMIT, deadline=10)
        return
    with pytest.raises(charts.IndexTooLarge) as raised:
        await charts.check_index_size(source, LIMIT, deadline=10)
    assert str(raised.value.cause) == (
        f"{repository}index.yaml is larger than 0.000953674 MiB, the limit of --max-index-size (helm holds "
        "the whole index in memory); raise the limit, or use a repository that publishes fewer chart versions, or "
        "an OCI chart"
    )


@pytest.mark.parametrize("status", [401, 404, 500])
async def test_other_answers_are_left_to_helm(server: str, status: int) -> None:
    await charts.check_index_size(
        charts.RepositoryChart(f"{server}/status/{status}/", "a", "1"), LIMIT, deadline=10
    )


async def test_a_refused_connection_is_left_to_helm(unused_tcp_port: int) -> None:
    source = charts.RepositoryChart(f"http://127.0.0.1:{unused_tcp_port}/", "a", "1")
    await charts.check_index_size(source, LIMIT, deadline=10)


async def test_the_credentials_are_sent(server: str) -> None:
    await charts.check_index_size(charts.RepositoryChart(f"{server}/private/", "a", "1"), LIMIT, deadline=10)
    source = charts.RepositoryChart(f"{server}/private/", "a", "1", BasicCredentials("robot", "pw"))
    with pytest.raises(charts.IndexTooLarge):
        await charts.check_index_size(source, LIMIT, deadline=10)


async def test_a_stalled_index_stops_at_the_deadline(server: str) -> None:
    with pytest.raises(helm.Timeout, match=r"stall/index\.yaml did not finish within 0\.5s and was stopped"):
        await charts.check_index_size(
            charts.RepositoryChart(f"{server}/stall/", "a", "1"), LIMIT, deadline=0.5
        )
