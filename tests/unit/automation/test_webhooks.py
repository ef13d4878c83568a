"""The webhook receivers through the real HTTP server: authentication, bounds, replies, metrics and logs."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from tests.support.procs import free_port

from helmrelease.adapters.http_server import HttpServer, Reply
from helmrelease.automation.notifications import Pushed, Sender
from helmrelease.automation.webhooks import (
    RefusalLog,
    WebhookMetrics,
    bearer_matches,
    hook_routes,
    query_token_matches,
    signature_matches,
)
from helmrelease.images.reference import CanonicalName

FIXTURES = Path(__file__).parents[2] / "fixtures" / "webhooks"
TOKEN = "s3cr3t-token-for-tests"
SAMPLES = {
    Sender.DISTRIBUTION: "distribution-tag.json",
    Sender.DOCKERHUB: "dockerhub.json",
    Sender.HARBOR: "harbor.json",
    Sender.GHCR: "ghcr-package.json",
    Sender.QUAY: "quay.json",
}


def sign(body: bytes, secret: str = TOKEN) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"  Bearer   {TOKEN} ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        ("", False),
        ("Bearer \u00e9t\u00e9", False),
    ],
)
def test_bearer_matches(header: str, ok: bool) -> None:
    assert bearer_matches({"authorization": header} if header else {}, TOKEN) is ok


def test_query_token_matches() -> None:
    assert query_token_matches({"token": TOKEN}, TOKEN)
    assert not query_token_matches({"token": TOKEN + "x"}, TOKEN)
    assert not query_token_matches({}, TOKEN)


@pytest.mark.parametrize(
    ("signature", "ok"),
    [
        (sign(b"{}"), True),
        (sign(b"{}").upper().replace("SHA256=", "sha256="), True),
        (sign(b"{} "), False),
        (sign(b"{}", "other"), False),
        (sign(b"{}").removeprefix("sha256="), False),
        ("sha1=" + hmac.new(TOKEN.encode(), b"{}", hashlib.sha1).hexdigest(), False),
        ("", False),
    ],
)
def test_signature_matches(signature: str, ok: bool) -> None:
    assert signature_matches({"x-hub-signature-256": signature}, b"{}", TOKEN) is ok


def test_the_refusal_log_says_once_per_interval_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RefusalLog(every=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert log.warn(("a", "x"), "first")
        assert not log.warn(("a", "x"), "again")
        assert not log.warn(("a", "x"), "again")
        assert log.warn(("b", "x"), "other key")
        now[0] = 10.0
        assert log.warn(("a", "x"), "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "other key",
        "later (2 more like it not logged)",
    ]


@dataclass
class Hooks:
    port: int
    session: aiohttp.ClientSession
    metrics: CollectorRegistry
    notified: list[tuple[Pushed, ...]] = field(default_factory=list)

    def url(self, sender: Sender | str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{sender}{query}"

    async def post(
        self, sender: Sender | str, body: bytes, headers: dict[str, str] | None = None, query: str = ""
    ) -> tuple[int, dict[str, object]]:
        async with self.session.post(self.url(sender, query), data=body, headers=headers or {}) as response:
            text = await response.text()
            return response.status, json.loads(text) if text.startswith("{") else {"text": text}

    def count(self, sender: Sender, outcome: str) -> float:
        value = self.metrics.get_sample_value(
            "helmrelease_webhook_requests_total", {"receiver": sender.value, "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    metrics = CollectorRegistry()
    notified: list[tuple[Pushed, ...]] = []
    routes = hook_routes(
        TOKEN, notified.append, WebhookMetrics.create(metrics), max_body=64 * 1024, read_timeout=1
    )
    port = free_port()
    server = HttpServer(
        {port: {"/healthz": lambda: Reply(200, b"ok")}},
        posts={port: routes},
        host="127.0.0.1",
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Hooks(port, session, metrics, notified)
    finally:
        await server.stop()


def good_headers(sender: Sender, body: bytes) -> dict[str, str]:
    if sender is Sender.GHCR:
        return {
            "X-Hub-Signature-256": sign(body),
            "X-GitHub-Event": "package",
            "Content-Type": "application/json",
        }
    return {"Authorization": f"Bearer {TOKEN}"}


def ghcr_tagged() -> bytes:
    document = json.loads((FIXTURES / "ghcr-package.json").read_bytes())
    document["package"]["package_version"]["container_metadata"]["tag"]["name"] = "v2"
    return json.dumps(document).encode()


EXPECTED = {
    Sender.DISTRIBUTION: Pushed(CanonicalName("example.com", "library/test"), "latest"),
    Sender.DOCKERHUB: Pushed(CanonicalName("docker.io", "svendowideit/testhook"), "latest"),
    Sender.HARBOR: Pushed(CanonicalName("hub.harbor.com", "test-webhook/debian"), "latest"),
    Sender.GHCR: Pushed(CanonicalName("ghcr.io", "codertocat/hello-world"), "v2"),
    Sender.QUAY: Pushed(CanonicalName("quay.io", "dgangaia/test"), "latest"),
}


def body_of(sender: Sender) -> bytes:
    return ghcr_tagged() if sender is Sender.GHCR else (FIXTURES / SAMPLES[sender]).read_bytes()


@pytest.mark.parametrize("sender", list(Sender))
async def test_an_authenticated_push_is_accepted_and_notified(hooks: Hooks, sender: Sender) -> None:
    body = body_of(sender)
    status, reply = await hooks.post(sender, body, good_headers(sender, body))
    assert (status, reply) == (202, {"outcome": "accepted", "images": [str(EXPECTED[sender])]})
    assert hooks.notified == [(EXPECTED[sender],)]
    assert hooks.count(sender, "accepted") == 1


@pytest.mark.parametrize("sender", [Sender.DOCKERHUB, Sender.QUAY])
async def test_senders_without_headers_may_put_the_token_in_the_url(hooks: Hooks, sender: Sender) -> None:
    status, _ = await hooks.post(sender, body_of(sender), query=f"?token={TOKEN}")
    assert status == 202
    assert hooks.notified == [(EXPECTED[sender],)]


@pytest.mark.parametrize("sender", [Sender.DISTRIBUTION, Sender.HARBOR, Sender.GHCR])
async def test_the_url_token_is_not_enough_for_senders_that_can_send_headers(
    hooks: Hooks, sender: Sender
) -> None:
    status, _ = await hooks.post(sender, body_of(sender), query=f"?token={TOKEN}")
    assert status == 401
    assert hooks.notified == []


def _bad_auth() -> list[object]:
    cases = []
    for sender in Sender:
        if sender is Sender.GHCR:
            cases += [
                pytest.param(sender, {}, id="ghcr-no-signature"),
                pytest.param(
                    sender, {"X-Hub-Signature-256": sign(b"other body")}, id="ghcr-signature-of-another-body"
                ),
                pytest.param(sender, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, id="ghcr-zero-signature"),
                pytest.param(
                    sender, {"Authorization": f"Bearer {TOKEN}"}, id="ghcr-bearer-is-not-a-signature"
                ),
            ]
        else:
            cases += [
                pytest.param(sender, {}, id=f"{sender}-no-header"),
                pytest.param(sender, {"Authorization": "Bearer wrong"}, id=f"{sender}-wrong-token"),
                pytest.param(sender, {"Authorization": TOKEN}, id=f"{sender}-no-scheme"),
            ]
    return cases


@pytest.mark.parametrize(("sender", "headers"), _bad_auth())
async def test_unauthenticated_requests_are_401_counted_logged_and_change_nothing(
    hooks: Hooks, sender: Sender, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        status, reply = await hooks.post(sender, body_of(sender), {"X-GitHub-Event": "package", **headers})
    assert status == 401
    assert reply["outcome"] == "unauthorized"
    assert hooks.notified == []
    assert hooks.count(sender, "unauthorized") == 1
    assert any(
        f"webhook {sender}: refused a request from 127.0.0.1 (401 unauthorized)" in r.getMessage()
        and "nothing is rescanned" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("sender", list(Sender))
async def test_malformed_bodies_are_400_and_change_nothing(hooks: Hooks, sender: Sender) -> None:
    body = b"[1, 2"
    status, reply = await hooks.post(sender, body, good_headers(sender, body))
    assert status == 400
    assert reply["outcome"] == "malformed"
    assert "not JSON" in str(reply["detail"])
    assert hooks.notified == []
    assert hooks.count(sender, "malformed") == 1


async def test_a_notification_without_a_push_is_ignored(hooks: Hooks) -> None:
    body = (FIXTURES / "distribution-pull.json").read_bytes()
    status, reply = await hooks.post(Sender.DISTRIBUTION, body, good_headers(Sender.DISTRIBUTION, body))
    assert (status, reply) == (202, {"outcome": "ignored"})
    assert hooks.notified == []
    assert hooks.count(Sender.DISTRIBUTION, "ignored") == 1


async def test_a_github_ping_is_ignored(hooks: Hooks) -> None:
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    headers = {"X-Hub-Signature-256": sign(body), "X-GitHub-Event": "ping"}
    assert (await hooks.post(Sender.GHCR, body, headers))[0] == 202
    assert hooks.notified == []


async def test_an_announced_oversized_body_is_413_before_it_is_read(hooks: Hooks) -> None:
    # The server answers from the Content-Length alone: the client need not send more than a few bytes.
    reader, writer = await asyncio.open_connection("127.0.0.1", hooks.port)
    writer.write(
        b"POST /hooks/distribution HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        + b'{"events": ['
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert hooks.count(Sender.DISTRIBUTION, "too_large") == 1
    assert hooks.notified == []


async def test_a_chunked_body_growing_past_the_limit_is_413(hooks: Hooks) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with hooks.session.post(hooks.url(Sender.DISTRIBUTION), data=chunks(), headers=headers) as response:
        assert response.status == 413
    assert hooks.count(Sender.DISTRIBUTION, "too_large") == 1


async def test_an_unauthenticated_big_body_is_refused_without_reading_it(hooks: Hooks) -> None:
    status, _ = await hooks.post(Sender.HARBOR, b" " * 60_000, {"Authorization": "Bearer nope"})
    assert status == 401


async def test_a_body_that_trickles_is_408_and_the_other_routes_keep_answering(hooks: Hooks) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hooks.port)
    writer.write(
        b"POST /hooks/distribution HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        + b"{"
    )
    await writer.drain()
    async with hooks.session.get(f"http://127.0.0.1:{hooks.port}/healthz") as response:
        assert response.status == 200  # while the slow body is being waited for
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")
    assert hooks.count(Sender.DISTRIBUTION, "too_slow") == 1


async def test_a_compressed_body_is_not_inflated(hooks: Hooks) -> None:
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB of spaces in about 50 KB
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
    status, reply = await hooks.post(Sender.DISTRIBUTION, bomb, headers)
    assert (status, reply["outcome"]) == (400, "malformed")
    assert hooks.notified == []


async def test_an_unknown_receiver_is_404(hooks: Hooks) -> None:
    assert (await hooks.post("gitlab", b"{}", {"Authorization": f"Bearer {TOKEN}"}))[0] == 404


async def test_bodies_beyond_the_concurrent_reads_are_503_while_one_trickles() -> None:
    metrics = CollectorRegistry()
    notified: list[tuple[Pushed, ...]] = []
    routes = hook_routes(TOKEN, notified.append, WebhookMetrics.create(metrics), read_timeout=5)
    port = free_port()
    server = HttpServer({}, posts={port: routes}, host="127.0.0.1", max_posts=1)
    await server.start()
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /hooks/quay HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n{{".encode()
        )
        await writer.drain()
        hooks = Hooks(port, aiohttp.ClientSession(), metrics, notified)
        async with hooks.session:
            status = 0
            for _ in range(50):  # until the trickling body holds the one reading slot
                status, _ = await hooks.post(
                    Sender.DISTRIBUTION, body_of(Sender.DISTRIBUTION), good_headers(Sender.DISTRIBUTION, b"")
                )
                if status == 503:
                    break
                await asyncio.sleep(0.02)
            assert status == 503
            assert hooks.count(Sender.DISTRIBUTION, "busy") == 1
        writer.close()
    finally:
        await server.stop()
