"""RegistryClient and ScanCycle against an in-process registry that can misbehave on cue.

The fake speaks just enough of the Distribution API (tags with pagination, manifests, blobs, Basic and Bearer
auth) to let each test inject 429s, 5xx, malformed bodies, challenges, hangs and redirects, and it counts what
it was asked, so the tests prove costs (requests, tokens, blob fetches) as well as results.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from tests.support import pki
from yarl import URL

from helmrelease.adapters.registry import (
    CredentialStore,
    Platform,
    RegistryClient,
    RegistryConfig,
    RegistryError,
    RegistryForbidden,
    RegistryMalformedResponse,
    RegistryMetrics,
    RegistryNotFound,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
    RetryPolicy,
    ScanCycle,
    Timeouts,
)
from helmrelease.adapters.registry.formats import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
)

REPO = "team/app"
T_AMD64 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
T_ARM64 = datetime(2024, 6, 7, 8, 9, 10, tzinfo=UTC)
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.005, max_retry_after=5.0)


@dataclass(frozen=True)
class Fault:
    """A canned answer the fake gives instead of the real one, once."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _config_json(username: str, password: str, host: str) -> dict[str, Any]:
    return {"auths": {host: {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}}}


class FakeRegistry:
    """A Distribution API in memory, with fault injection and request accounting."""

    def __init__(self) -> None:
        self.host = ""
        self.tags: dict[str, list[str]] = defaultdict(list)
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.auth: str | None = None  # None, "basic" or "bearer"
        self.users: dict[str, str] = {}
        self.realm: str | None = None  # Bearer realm; default: this server's /token
        self.token_lifetime: int | None = 300
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, kind, Authorization)
        self.send_digest_header = True
        self.blob_redirect: str | None = None
        self.delay = 0.0
        self.headers: dict[str, dict[str, str]] = defaultdict(dict)  # added to answers, by kind
        self.sent_at: list[tuple[str, str, float]] = []  # (method, kind, time.monotonic())
        self.in_flight = 0
        self.peak_in_flight = 0

    # Content

    def add_manifest(self, repo: str, document: dict[str, Any], tag: str | None = None) -> str:
        body = json.dumps(document).encode()
        digest = _digest(body)
        self.manifests[(repo, digest)] = (body, document["mediaType"])
        if tag is not None:
            self.manifests[(repo, tag)] = (body, document["mediaType"])
            if tag not in self.tags[repo]:
                self.tags[repo].append(tag)
        return digest

    def add_image(
        self,
        repo: str,
        tag: str | None,
        config: dict[str, Any],
        *,
        config_type: str = OCI_CONFIG,
        manifest_type: str = OCI_MANIFEST,
    ) -> str:
        config_body = json.dumps(config).encode()
        config_digest = _digest(config_body)
        self.blobs[config_digest] = config_body
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": len(config_body)},
            "layers": [],
        }
        return self.add_manifest(repo, manifest, tag)

    def add_index(
        self, repo: str, tag: str, created: dict[Platform, datetime], *, docker: bool = False
    ) -> str:
        manifest_type, index_type = (
            (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST) if docker else (OCI_MANIFEST, OCI_INDEX)
        )
        entries = []
        for platform, when in created.items():
            config = {"created": when.isoformat(), "os": platform.os, "architecture": platform.architecture}
            digest = self.add_image(
                repo,
                None,
                config,
                manifest_type=manifest_type,
                config_type=DOCKER_CONFIG if docker else OCI_CONFIG,
            )
            entry_platform = {"os": platform.os, "architecture": platform.architecture}
            if platform.variant:
                entry_platform["variant"] = platform.variant
            entries.append(
                {"mediaType": manifest_type, "digest": digest, "size": 1, "platform": entry_platform}
            )
        return self.add_manifest(
            repo, {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}, tag
        )

    # Accounting

    def count(self, kind: str, method: str | None = None) -> int:
        return sum(1 for m, k, _ in self.requests if k == kind and (method is None or m == method))

    # HTTP

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/token", self._token)
        app.router.add_get("/v2/{name:.+}/tags/list", self._tag_list)
        app.router.add_get("/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        return app

    @staticmethod
    def _kind(path: str) -> str:
        for marker, kind in (("/tags/list", "tags"), ("/manifests/", "manifest"), ("/blobs/", "blob")):
            if marker in path:
                return kind
        return "token"

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        kind = self._kind(request.path)
        self.requests.append((request.method, kind, request.headers.get("Authorization")))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.faults[kind]:
                fault = self.faults[kind].popleft()
                return web.Response(status=fault.status, headers=fault.headers, body=fault.body)
            if kind != "token" and not self._authorized(request):
                return self._challenge(request)
            self.sent_at.append((request.method, kind, time.monotonic()))
            response = await handler(request)
            response.headers.update(self.headers[kind])
            return response
        finally:
            self.in_flight -= 1

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth == "basic":
            return header in {_basic(user, password) for user, password in self.users.items()}
        if self.auth == "bearer":
            return header.startswith("Bearer ") and header.removeprefix("Bearer ") in self.tokens
        return True

    def _challenge(self, request: web.Request) -> web.Response:
        if self.auth == "basic":
            challenge = 'Basic realm="fake"'
        else:
            realm = self.realm or str(request.url.origin().with_path("/token"))
            name = request.match_info.get("name", "")
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:{name}:pull"'
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
        return web.Response(status=401, headers={"WWW-Authenticate": challenge}, text=body)

    async def _token(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        self.token_requests.append({**request.query, "authorization": header or ""})
        known = {_basic(user, password) for user, password in self.users.items()}
        if (self.users and header not in known) or (header is not None and header not in known):
            return web.Response(status=401, text='{"details":"incorrect username or password"}')
        token = uuid.uuid4().hex
        self.tokens.add(token)
        body: dict[str, Any] = {"token": token}
        if self.token_lifetime is not None:
            body["expires_in"] = self.token_lifetime
        return web.json_response(body)

    async def _tag_list(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.tags:
            return web.json_response(
                {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}, status=404
            )
        tags = self.tags[name]
        start = 0
        if "last" in request.query:
            start = tags.index(request.query["last"]) + 1
        page_size = int(request.query.get("n", len(tags) or 1))
        page = tags[start : start + page_size]
        headers = {}
        if start + page_size < len(tags):
            next_url = URL.build(path=f"/v2/{name}/tags/list", query={"n": str(page_size), "last": page[-1]})
            headers["Link"] = f'<{next_url}>; rel="next"'
        return web.json_response({"name": name, "tags": page}, headers=headers)

    async def _manifest(self, request: web.Request) -> web.Response:
        found = self.manifests.get((request.match_info["name"], request.match_info["reference"]))
        if found is None:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}, status=404
            )
        body, media_type = found
        headers = {"Content-Type": media_type}
        if self.send_digest_header:
            headers["Docker-Content-Digest"] = _digest(body)
        return web.Response(body=body, headers=headers)

    async def _blob(self, request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        if self.blob_redirect is not None:
            raise web.HTTPTemporaryRedirect(
                f"{self.blob_redirect}/v2/{request.match_info['name']}/blobs/{digest}"
            )
        if digest not in self.blobs:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        return web.Response(body=self.blobs[digest], content_type="application/octet-stream")


@asynccontextmanager
async def serve(fake: FakeRegistry, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[FakeRegistry]:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server(ssl=ssl_context)
    fake.host = f"127.0.0.1:{server.port}"
    try:
        yield fake
    finally:
        await server.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeRegistry]:
    async with serve(FakeRegistry()) as registry:
        yield registry


@pytest.fixture
async def other_fake() -> AsyncIterator[FakeRegistry]:
    async with serve(FakeRegistry()) as registry:
        yield registry


def make_client(
    *fakes: FakeRegistry, credentials: CredentialStore | None = None, **settings: Any
) -> RegistryClient:
    settings.setdefault("retry", FAST_RETRY)
    settings.setdefault("requests_per_second", 10_000)  # tests of rate limiting ask for their own
    settings.setdefault("burst", 10_000)
    config = RegistryConfig(insecure_hosts=frozenset(f.host for f in fakes), **settings)
    return RegistryClient(
        config, credentials, RegistryMetrics.create(CollectorRegistry()), jitter=lambda: 1.0
    )


def metric(client: RegistryClient, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels`` (the way a dashboard query would)."""
    collectors = {
        "requests": client.metrics.requests,
        "cache": client.metrics.cache_lookups,
        "operations": client.metrics.operation_seconds,
    }
    suffix = "_count" if name == "operations" else "_total"
    return sum(
        sample.value
        for family in collectors[name].collect()
        for sample in family.samples
        if sample.name.endswith(suffix) and labels.items() <= sample.labels.items()
    )


# Tag listing: faults, retries and typed errors


@pytest.mark.parametrize(
    ("faults", "outcome", "requests"),
    [
        pytest.param([], ("1.0", "2.0"), 1, id="healthy"),
        pytest.param([Fault(429, {"Retry-After": "0"})], ("1.0", "2.0"), 2, id="429-retry-after-then-ok"),
        pytest.param([Fault(429)], ("1.0", "2.0"), 2, id="429-without-retry-after-backs-off"),
        pytest.param(
            [Fault(500), Fault(502), Fault(504)], ("1.0", "2.0"), 4, id="5xx-then-ok-on-last-attempt"
        ),
        pytest.param([Fault(503, {"Retry-After": "0"})], ("1.0", "2.0"), 2, id="503-retry-after"),
        pytest.param([Fault(500)] * 4, RegistryUnavailable, 4, id="5xx-exhausts-attempts"),
        pytest.param(
            [Fault(429, {"Retry-After": "0"})] * 4, RegistryRateLimited, 4, id="429-exhausts-attempts"
        ),
        pytest.param(
            [Fault(429, {"Retry-After": "3600"})], RegistryRateLimited, 1, id="429-retry-after-too-long"
        ),
        pytest.param([Fault(501)], RegistryUnavailable, 1, id="501-not-retried"),
        pytest.param([Fault(200, body=b"<html>login</html>")], RegistryMalformedResponse, 1, id="html-page"),
        pytest.param(
            [Fault(200, body=b'{"tags": "1.0"}')], RegistryMalformedResponse, 1, id="tags-not-a-list"
        ),
        pytest.param([Fault(401)], RegistryUnauthorized, 1, id="401-without-challenge"),
        pytest.param([Fault(403, body=b'{"errors":[{"code":"DENIED"}]}')], RegistryForbidden, 1, id="403"),
        pytest.param([Fault(404)], RegistryNotFound, 1, id="404"),
        pytest.param([Fault(400)], RegistryError, 1, id="other-4xx-is-the-base-error"),
    ],
)
async def test_tag_listing_outcomes(
    fake: FakeRegistry, faults: list[Fault], outcome: tuple[str, ...] | type[RegistryError], requests: int
) -> None:
    fake.tags[REPO] = ["1.0", "2.0"]
    fake.faults["tags"].extend(faults)
    async with make_client(fake) as client:
        if isinstance(outcome, tuple):
            assert await client.list_tags(f"{fake.host}/{REPO}") == outcome
        else:
            with pytest.raises(outcome) as raised:
                await client.list_tags(f"{fake.host}/{REPO}")
            assert type(raised.value) is outcome
            assert fake.host in str(raised.value)
            assert REPO in str(raised.value)
            assert raised.value.hint in str(raised.value)
        assert fake.count("tags") == requests
        assert metric(client, "requests", kind="tags") == requests


async def test_error_messages_carry_the_registrys_own_words(fake: FakeRegistry) -> None:
    async with make_client(fake) as client:
        with pytest.raises(
            RegistryNotFound, match=r"NAME_UNKNOWN: repository name not known.*check the image name"
        ):
            await client.list_tags(f"{fake.host}/missing/app")


async def test_retry_after_is_honoured(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1.0"]
    fake.faults["tags"].append(Fault(429, {"Retry-After": "1"}))
    async with make_client(fake) as client:
        started = time.monotonic()
        assert await client.list_tags(f"{fake.host}/{REPO}") == ("1.0",)
        assert time.monotonic() - started >= 0.95


async def test_retry_after_pauses_the_whole_registry(fake: FakeRegistry) -> None:
    """A 429 on one request holds the others to the same host instead of letting them hammer it."""
    for repo in ("a/one", "a/two", "a/three"):
        fake.tags[repo] = ["1"]
    fake.faults["tags"].append(Fault(429, {"Retry-After": "1"}))
    async with make_client(fake, concurrency=1) as client:
        started = time.monotonic()
        first = asyncio.create_task(client.list_tags(f"{fake.host}/a/one"))
        await asyncio.sleep(0.1)  # the 429 is in; the pause is set
        await client.list_tags(f"{fake.host}/a/two")
        assert time.monotonic() - started >= 0.95
        assert await first == ("1",)


# Pagination


@pytest.mark.parametrize(
    ("tag_count", "page_size", "pages"),
    [
        pytest.param(10_000, 1000, 10, id="10k-by-1000"),
        pytest.param(10_000, 100, 100, id="10k-by-100"),
        pytest.param(10_000, 10_000, 1, id="10k-one-page"),
        pytest.param(5, 2, 3, id="partial-last-page"),
        pytest.param(4, 2, 2, id="exact-pages"),
        pytest.param(0, 10, 1, id="no-tags"),
    ],
)
async def test_pagination(fake: FakeRegistry, tag_count: int, page_size: int, pages: int) -> None:
    expected = tuple(f"1.{n}.0" for n in range(tag_count))
    fake.tags[REPO] = list(expected)
    async with make_client(fake, page_size=page_size) as client:
        assert await client.list_tags(f"{fake.host}/{REPO}") == expected
    assert fake.count("tags") == pages


async def test_odd_tags_pass_through_pagination_unchanged(fake: FakeRegistry) -> None:
    odd = ("v1 beta", "ünïcode", "a+b", "x%2Fy", "semi;colon", "amp&n=1", "hash#frag", "q?x=1", "latest")
    fake.tags[REPO] = list(odd)
    async with make_client(fake, page_size=1) as client:
        assert await client.list_tags(f"{fake.host}/{REPO}") == odd


NEXT = '</v2/team/app/tags/list?n=1&last=a>; rel="next"'


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        pytest.param(
            [
                Fault(
                    200,
                    {"Link": '<http://elsewhere.example/v2/team/app/tags/list?n=1&last=a>; rel="next"'},
                    b'{"tags": ["a"]}',
                )
            ],
            "another host",
            id="foreign-host",
        ),
        pytest.param(
            [Fault(200, {"Link": NEXT}, b'{"tags": ["a"]}'), Fault(200, {"Link": NEXT}, b'{"tags": ["b"]}')],
            "repeats an earlier page",
            id="loop",
        ),
    ],
)
async def test_pagination_links_that_cannot_be_followed(
    fake: FakeRegistry, pages: list[Fault], message: str
) -> None:
    fake.faults["tags"].extend(pages)
    async with make_client(fake, page_size=1) as client:
        with pytest.raises(RegistryMalformedResponse, match=message):
            await client.list_tags(f"{fake.host}/{REPO}")
    assert fake.count("tags") == len(pages)


async def test_page_limit_stops_endless_pagination(fake: FakeRegistry) -> None:
    fake.tags[REPO] = [str(n) for n in range(10)]
    async with make_client(fake, page_size=1, max_tag_pages=3) as client:
        with pytest.raises(RegistryMalformedResponse, match="more than 3 pages"):
            await client.list_tags(f"{fake.host}/{REPO}")


async def test_oversized_bodies_are_refused(fake: FakeRegistry) -> None:
    fake.tags[REPO] = [f"tag-{n}" for n in range(1000)]
    async with make_client(fake, max_body_bytes=1024) as client:
        with pytest.raises(RegistryMalformedResponse, match="larger than 1024 bytes"):
            await client.list_tags(f"{fake.host}/{REPO}")


# Authentication


@pytest.mark.parametrize(
    ("auth", "users", "credentials", "outcome"),
    [
        pytest.param(None, {}, None, "ok", id="anonymous"),
        pytest.param("basic", {"robot": "pw"}, ("robot", "pw"), "ok", id="basic"),
        pytest.param("basic", {"robot": "pw"}, None, RegistryUnauthorized, id="basic-without-credentials"),
        pytest.param(
            "basic", {"robot": "pw"}, ("robot", "wrong"), RegistryUnauthorized, id="basic-wrong-password"
        ),
        pytest.param("bearer", {}, None, "ok", id="bearer-anonymous-token"),
        pytest.param("bearer", {"robot": "pw"}, ("robot", "pw"), "ok", id="bearer-with-credentials"),
        pytest.param("bearer", {"robot": "pw"}, None, RegistryUnauthorized, id="bearer-token-refused"),
        pytest.param(
            "bearer", {"robot": "pw"}, ("robot", "x"), RegistryUnauthorized, id="bearer-wrong-password"
        ),
    ],
)
async def test_authentication(
    fake: FakeRegistry,
    auth: str | None,
    users: dict[str, str],
    credentials: tuple[str, str] | None,
    outcome: str | type[RegistryError],
) -> None:
    fake.auth, fake.users = auth, users
    fake.tags[REPO] = ["1.0"]
    store = (
        CredentialStore.from_docker_configs(_config_json(*credentials, fake.host)) if credentials else None
    )
    async with make_client(fake, credentials=store) as client:
        if outcome == "ok":
            assert await client.list_tags(f"{fake.host}/{REPO}") == ("1.0",)
        else:
            with pytest.raises(RegistryUnauthorized, match="dockerconfigjson Secret"):
                await client.list_tags(f"{fake.host}/{REPO}")


async def test_bearer_tokens_are_cached_per_scope_and_sent_up_front(fake: FakeRegistry) -> None:
    fake.auth, fake.users = "bearer", {"robot": "pw"}
    fake.tags.update({"team/one": ["1"], "team/two": ["2"]})
    fake.add_image("team/one", "1", {"created": T_AMD64.isoformat()})
    store = CredentialStore.from_docker_configs(_config_json("robot", "pw", fake.host))
    async with make_client(fake, credentials=store) as client:
        await client.list_tags(f"{fake.host}/team/one")
        await client.list_tags(f"{fake.host}/team/one")
        assert await client.image_created(f"{fake.host}/team/one", "1") == T_AMD64
        await client.list_tags(f"{fake.host}/team/two")
        assert [request["scope"] for request in fake.token_requests] == [
            "repository:team/one:pull",
            "repository:team/two:pull",
        ]
        assert {request["service"] for request in fake.token_requests} == {"fake"}
        assert {request["authorization"] for request in fake.token_requests} == {_basic("robot", "pw")}
        assert metric(client, "requests", code="401") == 1  # only the very first request met a challenge


@pytest.mark.parametrize(
    ("lifetime", "token_requests"),
    [
        pytest.param(300, 1, id="long-lived-token-reused"),
        pytest.param(None, 1, id="default-lifetime-reused"),
        pytest.param(5, 3, id="token-expiring-within-the-margin-renewed"),
    ],
)
async def test_token_lifetime(fake: FakeRegistry, lifetime: int | None, token_requests: int) -> None:
    fake.auth, fake.token_lifetime = "bearer", lifetime
    fake.tags[REPO] = ["1"]
    async with make_client(fake) as client:
        for _ in range(3):
            await client.list_tags(f"{fake.host}/{REPO}")
    assert len(fake.token_requests) == token_requests


async def test_revoked_token_is_replaced_once(fake: FakeRegistry) -> None:
    fake.auth = "bearer"
    fake.tags[REPO] = ["1"]
    async with make_client(fake) as client:
        await client.list_tags(f"{fake.host}/{REPO}")
        fake.tokens.clear()
        assert await client.list_tags(f"{fake.host}/{REPO}") == ("1",)
    assert len(fake.token_requests) == 2


async def test_concurrent_requests_share_one_token_request(fake: FakeRegistry) -> None:
    fake.auth = "bearer"
    fake.tags.update({"team/one": ["1"], "team/two": ["2"]})
    async with make_client(fake) as client:
        await client.list_tags(f"{fake.host}/team/one")  # learn that the host wants Bearer tokens
        await asyncio.gather(*(client.list_tags(f"{fake.host}/team/two") for _ in range(20)))
    assert [request["scope"] for request in fake.token_requests] == [
        "repository:team/one:pull",
        "repository:team/two:pull",
    ]


async def test_plain_http_token_service_needs_to_be_listed(
    fake: FakeRegistry, other_fake: FakeRegistry
) -> None:
    fake.auth, fake.realm = "bearer", f"http://{other_fake.host}/token"
    fake.tags[REPO] = ["1"]
    config = RegistryConfig(insecure_hosts=frozenset({fake.host}), retry=FAST_RETRY)
    async with RegistryClient(config) as client:
        with pytest.raises(RegistryUnauthorized, match=f"list {other_fake.host} in insecure_hosts"):
            await client.list_tags(f"{fake.host}/{REPO}")
    assert other_fake.token_requests == []


async def test_token_service_that_answers_nonsense(fake: FakeRegistry) -> None:
    fake.auth = "bearer"
    fake.tags[REPO] = ["1"]
    fake.faults["token"].append(Fault(200, body=b'{"no": "token"}'))
    async with make_client(fake) as client:
        with pytest.raises(RegistryMalformedResponse, match=r"token from .*no 'token'"):
            await client.list_tags(f"{fake.host}/{REPO}")


async def test_credentials_never_follow_a_redirect_to_another_host(
    fake: FakeRegistry, other_fake: FakeRegistry
) -> None:
    fake.auth, fake.users = "basic", {"robot": "pw"}
    fake.add_image(REPO, "1", {"created": T_AMD64.isoformat()})
    other_fake.blobs = fake.blobs
    fake.blob_redirect = f"http://{other_fake.host}"
    store = CredentialStore.from_docker_configs(_config_json("robot", "pw", fake.host))
    async with make_client(fake, credentials=store) as client:
        assert await client.image_created(f"{fake.host}/{REPO}", "1") == T_AMD64
    assert [auth for _, kind, auth in other_fake.requests if kind == "blob"] == [None]


# Build times


def _labelled(created: datetime) -> dict[str, Any]:
    return {"config": {"Labels": {"org.opencontainers.image.created": created.isoformat()}}}


@pytest.mark.parametrize(
    ("setup", "platform", "expected"),
    [
        pytest.param(
            lambda f: f.add_image(REPO, "t", {"created": T_AMD64.isoformat()}),
            None,
            T_AMD64,
            id="single-manifest",
        ),
        pytest.param(
            lambda f: f.add_image(REPO, "t", _labelled(T_ARM64)), None, T_ARM64, id="label-fallback"
        ),
        pytest.param(lambda f: f.add_image(REPO, "t", {}), None, None, id="no-time-at-all"),
        pytest.param(
            lambda f: f.add_image(REPO, "t", {"created": "1970-01-01T00:00:00Z"} | _labelled(T_ARM64)),
            None,
            T_ARM64,
            id="epoch-placeholder-then-label",
        ),
        pytest.param(
            lambda f: f.add_image(
                REPO,
                "t",
                {"created": T_AMD64.isoformat()},
                config_type=DOCKER_CONFIG,
                manifest_type=DOCKER_MANIFEST,
            ),
            None,
            T_AMD64,
            id="docker-v2-manifest",
        ),
        pytest.param(
            lambda f: f.add_index(
                REPO, "t", {Platform("linux", "arm64"): T_ARM64, Platform("linux", "amd64"): T_AMD64}
            ),
            None,
            T_AMD64,
            id="index-default-linux-amd64",
        ),
        pytest.param(
            lambda f: f.add_index(
                REPO, "t", {Platform("linux", "amd64"): T_AMD64, Platform("linux", "arm64"): T_ARM64}
            ),
            Platform("linux", "arm64"),
            T_ARM64,
            id="index-configured-platform",
        ),
        pytest.param(
            lambda f: f.add_index(
                REPO,
                "t",
                {Platform("linux", "amd64"): T_AMD64, Platform("linux", "arm64", "v8"): T_ARM64},
                docker=True,
            ),
            Platform("linux", "arm64", "v8"),
            T_ARM64,
            id="docker-manifest-list-with-variant",
        ),
        pytest.param(
            lambda f: f.add_index(REPO, "t", {Platform("linux", "arm64"): T_ARM64}),
            None,
            None,
            id="index-without-the-platform",
        ),
        pytest.param(
            lambda f: f.add_image(
                REPO,
                "t",
                {"created": T_AMD64.isoformat()},
                config_type="application/vnd.cncf.helm.config.v1+json",
            ),
            None,
            None,
            id="helm-chart-artifact",
        ),
    ],
)
async def test_image_created(
    fake: FakeRegistry,
    setup: Callable[[FakeRegistry], str],
    platform: Platform | None,
    expected: datetime | None,
) -> None:
    setup(fake)
    settings = {"platform": platform} if platform else {}
    async with make_client(fake, **settings) as client:
        assert await client.image_created(f"{fake.host}/{REPO}", "t") == expected


def _index_of(fake: FakeRegistry, child: str, tag: str) -> str:
    entry = {
        "mediaType": OCI_INDEX,
        "digest": child,
        "size": 1,
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    return fake.add_manifest(REPO, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}, tag)


@pytest.mark.parametrize(
    ("tag", "outcome"),
    [
        pytest.param("outer", T_AMD64, id="index-of-index"),
        pytest.param("too-deep", RegistryMalformedResponse, id="deeper"),
    ],
)
async def test_nested_indexes_are_followed_once(
    fake: FakeRegistry, tag: str, outcome: datetime | type[RegistryError]
) -> None:
    inner = fake.add_index(REPO, "inner", {Platform("linux", "amd64"): T_AMD64})
    _index_of(fake, _index_of(fake, inner, "outer"), "too-deep")
    async with make_client(fake) as client:
        if isinstance(outcome, datetime):
            assert await client.image_created(f"{fake.host}/{REPO}", tag) == outcome
        else:
            with pytest.raises(outcome, match="nested deeper than 2"):
                await client.image_created(f"{fake.host}/{REPO}", tag)


async def test_unknown_tag_is_not_found(fake: FakeRegistry) -> None:
    fake.tags[REPO] = []
    async with make_client(fake) as client:
        with pytest.raises(RegistryNotFound, match="manifest nope: HTTP 404"):
            await client.image_created(f"{fake.host}/{REPO}", "nope")


async def test_content_that_does_not_match_its_digest_is_refused(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    for digest in fake.blobs:
        fake.blobs[digest] = b'{"created": "2030-01-01T00:00:00Z"}'
    async with make_client(fake) as client:
        with pytest.raises(RegistryMalformedResponse, match="hashes to"):
            await client.image_created(f"{fake.host}/{REPO}", "t")


async def test_repeated_lookups_cost_one_head_request(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as client:
        for _ in range(3):
            assert await client.image_created(f"{fake.host}/{REPO}", "t") == T_AMD64
        assert (fake.count("manifest", "HEAD"), fake.count("manifest", "GET"), fake.count("blob")) == (
            3,
            1,
            1,
        )
        assert metric(client, "cache", cache="manifest", result="hit") == 2
        assert metric(client, "requests", kind="blob") == 1
        assert metric(client, "operations", operation="image_created") == 3


async def test_config_blobs_are_fetched_once_per_digest(fake: FakeRegistry) -> None:
    """Retagged builds share a config blob: twenty tags, twenty manifests, one blob request, concurrently."""
    config = {"created": T_AMD64.isoformat()}
    for n in range(20):
        fake.add_manifest(
            REPO,
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": _digest(json.dumps(config).encode()),
                    "size": 1,
                },
                "layers": [],
                "annotations": {"n": str(n)},
            },
            f"t{n}",
        )
    fake.blobs[_digest(json.dumps(config).encode())] = json.dumps(config).encode()
    async with make_client(fake, concurrency=8) as client:
        results = await asyncio.gather(
            *(client.image_created(f"{fake.host}/{REPO}", f"t{n}") for n in range(20))
        )
        assert results == [T_AMD64] * 20
        assert fake.count("blob") == 1
        assert (
            metric(client, "cache", cache="config", result="miss")
            + metric(client, "cache", cache="config", result="hit")
            == 20
        )


async def test_registry_without_digest_header_still_works(fake: FakeRegistry) -> None:
    fake.send_digest_header = False
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as client:
        assert await client.image_created(f"{fake.host}/{REPO}", "t") == T_AMD64
        assert await client.image_created(f"{fake.host}/{REPO}", "t") == T_AMD64
        assert (fake.count("manifest", "HEAD"), fake.count("manifest", "GET"), fake.count("blob")) == (
            2,
            2,
            1,
        )


async def test_config_cache_is_bounded(fake: FakeRegistry) -> None:
    for n in range(3):
        fake.add_image(REPO, f"t{n}", {"created": T_AMD64.isoformat(), "n": n})
    async with make_client(fake, config_cache_size=2, manifest_cache_size=1) as client:
        for tag in ("t0", "t1", "t2", "t0"):
            await client.image_created(f"{fake.host}/{REPO}", tag)
    assert fake.count("blob") == 4  # t0's config was evicted by t2 and fetched again


# Scan cycles


async def test_scan_cycle_lists_each_repository_once(fake: FakeRegistry) -> None:
    fake.delay = 0.05
    fake.tags.update({"team/one": ["1"], "team/two": ["2"]})
    async with make_client(fake) as client:
        cycle = ScanCycle(client)
        names = [f"{fake.host}/team/one"] * 30 + [f"{fake.host}/team/two"] * 30
        results = await asyncio.gather(*(cycle.list_tags(name) for name in names))
        assert results == [("1",)] * 30 + [("2",)] * 30
        assert fake.count("tags") == 2
        assert metric(client, "cache", cache="cycle_tags", result="hit") == 58
        await ScanCycle(client).list_tags(f"{fake.host}/team/one")
        assert fake.count("tags") == 3  # a new cycle sees new tags


async def test_scan_cycle_remembers_failures_for_the_cycle(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1"]
    fake.faults["tags"].extend([Fault(500)] * 4)
    async with make_client(fake) as client:
        cycle = ScanCycle(client)
        outcomes = await asyncio.gather(
            *(cycle.list_tags(f"{fake.host}/{REPO}") for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(outcome, RegistryUnavailable) for outcome in outcomes)
        assert fake.count("tags") == 4
        assert await ScanCycle(client).list_tags(f"{fake.host}/{REPO}") == ("1",)


async def test_scan_cycle_resolves_each_image_once(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as client:
        cycle = ScanCycle(client)
        results = await asyncio.gather(*(cycle.image_created(f"{fake.host}/{REPO}", "t") for _ in range(10)))
        assert results == [T_AMD64] * 10
        assert fake.count("manifest", "HEAD") == 1


# Limits and isolation


async def test_concurrency_is_capped_per_registry(fake: FakeRegistry) -> None:
    fake.delay = 0.05
    for n in range(12):
        fake.tags[f"team/app{n}"] = ["1"]
    async with make_client(fake, concurrency=3) as client:
        await asyncio.gather(*(client.list_tags(f"{fake.host}/team/app{n}") for n in range(12)))
    assert fake.peak_in_flight == 3


async def test_request_rate_is_limited_per_registry(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1"]
    async with make_client(fake, requests_per_second=20, burst=1) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.list_tags(f"{fake.host}/{REPO}") for _ in range(6)))
        assert time.monotonic() - started >= 0.24  # 5 requests beyond the burst at 20/s


async def test_a_hanging_registry_does_not_hold_up_another(
    fake: FakeRegistry, other_fake: FakeRegistry
) -> None:
    fake.delay = 5.0
    fake.tags[REPO] = ["slow"]
    other_fake.tags[REPO] = ["fast"]
    client = make_client(
        fake,
        other_fake,
        concurrency=1,
        timeouts=Timeouts(connect=1, read=0.3, total=0.3),
        retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001),
    )
    async with client:
        slow = [asyncio.create_task(client.list_tags(f"{fake.host}/{REPO}")) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await client.list_tags(f"{other_fake.host}/{REPO}") == ("fast",)
        assert time.monotonic() - started < 0.25
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
    assert all(
        isinstance(outcome, RegistryUnavailable) and "timed out" in str(outcome) for outcome in outcomes
    )
    assert metric(client, "requests", registry=fake.host, code="timeout") == 4


async def test_connection_refused_is_unavailable_after_retries() -> None:
    async with serve(FakeRegistry()) as gone:
        host = gone.host
    config = RegistryConfig(insecure_hosts=frozenset({host}), retry=RetryPolicy(attempts=2, base_delay=0.001))
    async with RegistryClient(config) as client:
        with pytest.raises(RegistryUnavailable, match="after 2 attempts"):
            await client.list_tags(f"{host}/{REPO}")
        assert metric(client, "requests", code="error") == 2


# Transport security


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A serving context for 127.0.0.1 and the PEM of the CA that signed it."""
    made = pki.generate(tmp_path_factory.mktemp("registry-tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(made.serving_cert, made.serving_key)
    return context, Path(made.ca_cert).read_text()


async def test_https_with_a_custom_ca_bundle(tls: tuple[ssl.SSLContext, str]) -> None:
    server_context, ca_pem = tls
    async with serve(FakeRegistry(), server_context) as registry:
        registry.tags[REPO] = ["secure"]
        config = RegistryConfig(ca_bundles={registry.host: ca_pem}, retry=FAST_RETRY)
        async with RegistryClient(config) as client:
            assert await client.list_tags(f"{registry.host}/{REPO}") == ("secure",)


async def test_https_with_an_unknown_ca_fails_at_once(tls: tuple[ssl.SSLContext, str]) -> None:
    server_context, _ = tls
    async with serve(FakeRegistry(), server_context) as registry:
        async with RegistryClient(RegistryConfig(retry=FAST_RETRY)) as client:
            with pytest.raises(RegistryUnavailable, match=r"TLS failure.*ca_bundles"):
                await client.list_tags(f"{registry.host}/{REPO}")
        assert registry.requests == []


async def test_hosts_not_listed_as_insecure_are_spoken_to_over_https(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1"]
    async with RegistryClient(RegistryConfig(retry=RetryPolicy(attempts=1))) as client:
        with pytest.raises(RegistryUnavailable):
            await client.list_tags(f"{fake.host}/{REPO}")
    assert fake.requests == []


def test_a_bad_ca_bundle_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match=r"ca_bundles\['r.example'\] is not a PEM"):
        RegistryClient(RegistryConfig(ca_bundles={"r.example": "not a certificate"}))


@pytest.mark.parametrize(
    "settings",
    [{"concurrency": 0}, {"requests_per_second": 0}, {"page_size": -1}, {"config_cache_size": 0}],
    ids=lambda settings: next(iter(settings)),
)
def test_config_refuses_nonsense(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RegistryConfig(**settings)


async def test_a_closed_client_refuses_work(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1"]
    client = make_client(fake)
    assert await client.list_tags(f"{fake.host}/{REPO}") == ("1",)
    await client.close()
    with pytest.raises(RuntimeError, match="after close"):
        await client.list_tags(f"{fake.host}/{REPO}")


@pytest.mark.parametrize(
    "digest_header", [pytest.param(True, id="head"), pytest.param(False, id="no-header")]
)
async def test_tag_digest_is_what_the_tag_resolves_to(fake: FakeRegistry, digest_header: bool) -> None:
    image = fake.add_image(REPO, "single", {"created": T_AMD64.isoformat()})
    index = fake.add_index(REPO, "multi", {Platform("linux", "amd64"): T_AMD64})
    fake.send_digest_header = digest_header
    async with make_client(fake) as client:
        assert await client.tag_digest(f"{fake.host}/{REPO}", "single") == image
        assert await client.tag_digest(f"{fake.host}/{REPO}", "multi") == index  # the index's own digest
    methods = [method for method, kind, _ in fake.requests if kind == "manifest"]
    assert methods == (["HEAD", "HEAD"] if digest_header else ["HEAD", "GET", "HEAD", "GET"])


async def test_tag_digest_of_an_unknown_tag_is_not_found(fake: FakeRegistry) -> None:
    fake.tags[REPO] = []
    async with make_client(fake) as client:
        with pytest.raises(RegistryNotFound, match="manifest nope: HTTP 404"):
            await client.tag_digest(f"{fake.host}/{REPO}", "nope")


# Tag resolution with a known record (the tag cache)


async def test_a_new_tag_costs_its_manifest_and_config_blob_only(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as client:
        record = await client.resolve_tag(f"{fake.host}/{REPO}", "t")
        assert record.created == T_AMD64
        assert record.digest == _digest(fake.manifests[(REPO, "t")][0])
        assert (fake.count("manifest", "HEAD"), fake.count("manifest", "GET"), fake.count("blob")) == (
            0,
            1,
            1,
        )


async def test_a_known_tag_costs_one_head_while_its_digest_holds(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as first:
        known = await first.resolve_tag(f"{fake.host}/{REPO}", "t")
    fake.requests.clear()
    async with make_client(fake) as restarted:  # empty digest caches, as after a restart
        again = await restarted.resolve_tag(f"{fake.host}/{REPO}", "t", known)
    assert (again.digest, again.created) == (known.digest, known.created)
    assert again.checked >= known.checked
    assert [(method, kind) for method, kind, _ in fake.requests] == [("HEAD", "manifest")]


async def test_a_repushed_tag_is_resolved_again(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as client:
        known = await client.resolve_tag(f"{fake.host}/{REPO}", "t")
        fake.add_image(REPO, "t", {"created": T_ARM64.isoformat()})
        fake.requests.clear()
        moved = await client.resolve_tag(f"{fake.host}/{REPO}", "t", known)
    assert moved.created == T_ARM64
    assert moved.digest != known.digest
    assert (fake.count("manifest", "HEAD"), fake.count("manifest", "GET"), fake.count("blob")) == (1, 1, 1)


async def test_scan_cycle_resolves_each_tag_once(fake: FakeRegistry) -> None:
    fake.add_image(REPO, "t", {"created": T_AMD64.isoformat()})
    async with make_client(fake) as client:
        cycle = ScanCycle(client)
        results = await asyncio.gather(*(cycle.resolve_tag(f"{fake.host}/{REPO}", "t") for _ in range(5)))
    assert {r.created for r in results} == {T_AMD64}
    assert fake.count("manifest") == 1


# Budgets the registry announces: slow down before the 429


async def test_an_announced_budget_spaces_the_gets_out(fake: FakeRegistry) -> None:
    for n in range(3):
        fake.add_image(REPO, f"t{n}", {"created": T_AMD64.isoformat()})
    fake.headers["manifest"] = {"RateLimit-Remaining": "1;w=21600", "RateLimit-Reset": "1"}
    async with make_client(fake) as client:
        for n in range(3):
            await client.resolve_tag(f"{fake.host}/{REPO}", f"t{n}")
    gets = [at for method, kind, at in fake.sent_at if (method, kind) == ("GET", "manifest")]
    assert len(gets) == 3
    # one left for a second from the first answer (which came after gets[0]): the third waits for the reset
    assert gets[2] - gets[0] >= 0.9
    assert fake.count("manifest") == 3  # and no 429 was needed


async def test_a_spent_budget_with_a_long_reset_fails_without_sending(fake: FakeRegistry) -> None:
    for n in range(2):
        fake.add_image(REPO, f"t{n}", {"created": T_AMD64.isoformat()})
    fake.headers["manifest"] = {"RateLimit-Remaining": "0;w=21600"}
    async with make_client(fake) as client:
        known = await client.resolve_tag(f"{fake.host}/{REPO}", "t0")
        sent = len(fake.requests)
        with pytest.raises(RegistryRateLimited, match="request budget is spent"):
            await client.resolve_tag(f"{fake.host}/{REPO}", "t1")
        assert len(fake.requests) == sent
        # HEADs are free on Docker Hub: a re-check still goes out
        assert (await client.resolve_tag(f"{fake.host}/{REPO}", "t0", known)).digest == known.digest
        assert fake.count("manifest", "HEAD") == 1


async def test_a_spent_budget_with_a_short_reset_waits_for_it(fake: FakeRegistry) -> None:
    for n in range(2):
        fake.add_image(REPO, f"t{n}", {"created": T_AMD64.isoformat()})
    fake.headers["manifest"] = {"RateLimit-Remaining": "0", "RateLimit-Reset": "1"}
    async with make_client(fake) as client:
        await client.resolve_tag(f"{fake.host}/{REPO}", "t0")
        fake.headers["manifest"] = {}
        await client.resolve_tag(f"{fake.host}/{REPO}", "t1")
    gets = [at for method, kind, at in fake.sent_at if (method, kind) == ("GET", "manifest")]
    assert gets[1] - gets[0] >= 0.9


async def test_retry_after_on_a_success_pauses_the_registry(fake: FakeRegistry) -> None:
    fake.tags[REPO] = ["1"]
    fake.headers["tags"] = {"Retry-After": "1"}
    async with make_client(fake) as client:
        await client.list_tags(f"{fake.host}/{REPO}")
        fake.headers["tags"] = {}
        await client.list_tags(f"{fake.host}/{REPO}")
    first, second = (at for _, kind, at in fake.sent_at if kind == "tags")
    assert second - first >= 0.9
