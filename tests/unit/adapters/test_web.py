"""Reading a values document by URL: what comes back, and what each failure says (credentials masked)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from helmrelease.adapters.web import WebReader, WebReadError


async def _values(_: web.Request) -> web.Response:
    return web.Response(text="replicas: 3\n")


async def _missing(_: web.Request) -> web.Response:
    return web.Response(status=404, text="no such file")


async def _binary(_: web.Request) -> web.Response:
    return web.Response(body=b"\xff\xfe\x00garbage", content_type="text/plain", charset="utf-8")


async def _slow(_: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(
        [
            web.get("/values.yaml", _values),
            web.get("/missing.yaml", _missing),
            web.get("/binary", _binary),
            web.get("/slow", _slow),
        ]
    )
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield f"127.0.0.1:{test_server.port}"
    finally:
        await test_server.close()


@pytest.fixture
async def reader() -> AsyncIterator[WebReader]:
    web_reader = WebReader(timeout=1)
    try:
        yield web_reader
    finally:
        await web_reader.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_document_is_read_as_text(server: str, reader: WebReader) -> None:
    assert await reader.read_text(f"http://{server}/values.yaml") == "replicas: 3\n"
    assert await reader.read_text(f"http://{server}/values.yaml") == "replicas: 3\n", "the session is reused"


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        pytest.param("/missing.yaml", 404, "answered HTTP 404", id="not-200"),
        pytest.param("/binary", None, "the answer is not text", id="not-text"),
        pytest.param("/slow", None, "TimeoutError", id="too-slow"),
    ],
)
async def test_an_answer_without_the_document_is_an_error(
    server: str, reader: WebReader, path: str, status: int | None, detail: str
) -> None:
    with pytest.raises(WebReadError) as raised:
        await reader.read_text(f"http://{server}{path}")
    assert raised.value.status == status
    assert raised.value.detail.startswith(detail), raised.value.detail


async def test_no_answer_is_an_error_that_does_not_quote_credentials(reader: WebReader) -> None:
    url = f"http://deployer:s3cret@127.0.0.1:{closed_port()}/values.yaml"
    with pytest.raises(WebReadError) as raised:
        await reader.read_text(url)
    assert raised.value.status is None
    assert "Cannot connect" in raised.value.detail, raised.value.detail
    assert "s3cret" not in raised.value.detail
    assert "s3cret" not in str(raised.value)


async def test_closing_a_reader_that_never_read_is_fine() -> None:
    await WebReader().close()
