"""The async OCI Distribution client the image-policy sidecar scans registries with.

Costs are what shape it: tag lists are paged and memoised per scan cycle (``ScanCycle``); a tag's build time
costs one HEAD when its manifest digest was seen before, because manifests and config blobs are immutable and
cached by digest; each registry gets its own concurrency cap, request rate and pause on Retry-After, so a slow
or throttling registry only slows itself down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, ParamSpec, Self, TypeVar
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry
from yarl import URL

from helmrelease.adapters.backoff import backoff_delay
from helmrelease.adapters.coalesce import TaskMemo
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.registry.config import RegistryConfig
from helmrelease.adapters.registry.credentials import CredentialProvider, CredentialStore
from helmrelease.adapters.registry.errors import (
    RegistryError,
    RegistryMalformedResponse,
    RegistryRateLimited,
    RegistryUnauthorized,
    RegistryUnavailable,
    error_for_status,
)
from helmrelease.adapters.registry.formats import (
    MANIFEST_ACCEPT,
    DocumentError,
    ImageIndex,
    created_from_config,
    describe_error_body,
    digest_of,
    is_digest,
    is_image_config,
    parse_image_manifest,
    parse_tag_page,
    parse_token,
    select_platform,
    verify_digest,
)
from helmrelease.adapters.registry.headers import (
    Challenge,
    parse_next_link,
    parse_rate_budget,
    parse_www_authenticate,
    preferred_challenge,
    retry_after_seconds,
)
from helmrelease.adapters.registry.limits import HostLimiter, LimitTooLong
from helmrelease.adapters.registry.metrics import RegistryMetrics
from helmrelease.adapters.registry.names import api_host, as_canonical, pull_scope
from helmrelease.adapters.registry.tagcache import TagRecord
from helmrelease.images.reference import CanonicalName

_log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")

SessionFactory = Callable[[], aiohttp.ClientSession]

_DEFAULT_TOKEN_LIFETIME = 60.0  # the token spec's default when a token service omits expires_in
_TOKEN_EXPIRY_MARGIN = 10.0  # renew a little early so a token does not expire in flight
_MAX_INDEX_DEPTH = 2  # an index may point at an index once; deeper is a broken or hostile registry
_NOT_RETRIED_5XX = frozenset({501, 505})


@dataclass(frozen=True)
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL


@dataclass(frozen=True)
class _Call:
    """What one request is for: its limits, metrics labels and error messages follow from this."""

    name: CanonicalName
    kind: Literal["tags", "manifest", "blob", "token"]
    what: str  # for messages: "tag list", "manifest 1.2.3", ...

    def error(self, error_type: type[RegistryError], detail: str, status: int | None = None) -> RegistryError:
        return error_type(self.name.host, self.name.path, f"{self.what}: {detail}", status=status)

    def parsed(self, parse: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a document parser; its ``DocumentError`` becomes a malformed-response error about this call."""
        try:
            return parse(*args, **kwargs)
        except DocumentError as error:
            raise self.error(RegistryMalformedResponse, str(error)) from None

    def json_document(self, parse: Callable[[bytes], _T], response: _Response) -> _T:
        """``parsed`` for a JSON answer: a refusal names the Content-Type when it was not JSON's, since an
        HTML page where JSON belongs is a login page or a proxy's error page, not a broken registry."""
        try:
            return parse(response.body)
        except DocumentError as error:
            raise self.error(RegistryMalformedResponse, f"{error}{_served_as(response)}") from None


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic() deadline


class _BodyTooLarge(Exception):
    pass


def _authority(url: URL) -> str:
    return (url.host_port_subcomponent or "").lower()


def _default_session() -> aiohttp.ClientSession:
    """Proxies from the environment (HTTPS_PROXY, NO_PROXY) as every other cluster component honours them.
    No connection cap of its own (the per-registry slots are the cap), so waiting for a pooled connection
    never eats into a request's timeout."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), trust_env=True, cookie_jar=aiohttp.DummyCookieJar()
    )


def _ssl_context(host: str, pem: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as error:
        raise ValueError(f"ca_bundles[{host!r}] is not a PEM certificate bundle: {error}") from None


class RegistryClient:
    """List tags and read build times from OCI registries. Use as ``async with`` or call ``close()``.

    The client owns the aiohttp session (made lazily by ``session_factory`` inside the running loop) and
    closes it. Every failure is a ``RegistryError`` subclass naming registry, repository and what to do.
    """

    def __init__(
        self,
        config: RegistryConfig | None = None,
        credentials: CredentialProvider | None = None,
        metrics: RegistryMetrics | None = None,
        *,
        session_factory: SessionFactory = _default_session,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.config = config if config is not None else RegistryConfig()
        self._credentials: CredentialProvider = credentials if credentials is not None else CredentialStore()
        self.metrics = metrics if metrics is not None else RegistryMetrics.create(CollectorRegistry())
        self._session_factory = session_factory
        # Jitter only spreads retries out; it needs no particular quality, but tests want to fix it.
        self._jitter = jitter or random.SystemRandom().random
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._ssl = {host: _ssl_context(host, pem) for host, pem in self.config.ca_bundles.items()}
        self._limiters: dict[str, HostLimiter] = {}
        self._challenges: dict[str, Challenge] = {}
        self._tokens: TaskMemo[tuple[str, str | None, str, str | None], _Token] = TaskMemo(
            max_entries=self.config.token_cache_size
        )
        self._configs: TaskMemo[str, datetime | None] = TaskMemo(max_entries=self.config.config_cache_size)
        self._manifests: TaskMemo[str, datetime | None] = TaskMemo(
            max_entries=self.config.manifest_cache_size
        )
        self._timeout = aiohttp.ClientTimeout(
            total=self.config.timeouts.total,
            connect=self.config.timeouts.connect,
            sock_read=self.config.timeouts.read,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel in-flight shared fetches and close the session; the client cannot be used afterwards."""
        self._closed = True
        for memo in (self._tokens, self._configs, self._manifests):
            memo.cancel_pending()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Public operations

    async def list_tags(self, repository: CanonicalName | str) -> tuple[str, ...]:
        """Every tag of ``repository`` in the registry's order, all pages followed, duplicates dropped.

        ``repository`` is a canonical name or ``[registry/]path`` text (``ImageReferenceError`` if malformed).
        """
        name = as_canonical(repository)
        call = _Call(name, "tags", "tag list")
        with self.metrics.time_operation(name.host, "list_tags"):
            first = self._api_url(name, "tags/list").with_query(n=str(self.config.page_size))
            url, seen, tags = first, {first}, dict[str, None]()
            for _ in range(self.config.max_tag_pages):
                response = await self._fetch(call, "GET", url, accept="application/json")
                tags.update(dict.fromkeys(call.json_document(parse_tag_page, response)))
                link = parse_next_link(response.headers.get("Link"))
                if link is None:
                    return tuple(tags)
                url = response.url.join(URL(link, encoded=True))
                if url.origin() != first.origin():
                    raise call.error(
                        RegistryMalformedResponse, f"next page link leads to another host: {link}"
                    )
                if url in seen:
                    raise call.error(
                        RegistryMalformedResponse, f"next page link repeats an earlier page: {link}"
                    )
                seen.add(url)
            raise call.error(
                RegistryMalformedResponse, f"more than {self.config.max_tag_pages} pages of tags"
            )

    async def image_created(self, repository: CanonicalName | str, tag: str) -> datetime | None:
        """When ``repository:tag`` was built (for the configured platform), or None if the image won't say.

        Costs one HEAD when the tag's manifest digest was resolved before; otherwise manifest(s) and the
        config blob, each fetched by digest and verified, the blob at most once per digest.
        """
        name = as_canonical(repository)
        call = _Call(name, "manifest", f"manifest {tag}")
        with self.metrics.time_operation(name.host, "image_created"):
            url = self._api_url(name, f"manifests/{quote(tag, safe='')}")
            head = await self._fetch(call, "HEAD", url, accept=MANIFEST_ACCEPT)
            digest = head.headers.get("Docker-Content-Digest", "")
            preloaded = None
            if not is_digest(digest):
                preloaded = await self._fetch(call, "GET", url, accept=MANIFEST_ACCEPT)
                digest = preloaded.headers.get("Docker-Content-Digest", "")
                if not is_digest(digest):
                    digest = digest_of(preloaded.body)
            return await self._created_by_digest(name, digest, preloaded, 0)

    async def tag_digest(self, repository: CanonicalName | str, tag: str) -> str:
        """The manifest digest ``repository:tag`` resolves to now (an index's own digest for a multi-platform
        image: what ``tag@digest`` pins). One HEAD; a registry that sends no digest costs a GET, verified."""
        name = as_canonical(repository)
        call = _Call(name, "manifest", f"manifest {tag}")
        with self.metrics.time_operation(name.host, "tag_digest"):
            url = self._api_url(name, f"manifests/{quote(tag, safe='')}")
            head = await self._fetch(call, "HEAD", url, accept=MANIFEST_ACCEPT)
            digest = head.headers.get("Docker-Content-Digest", "")
            if is_digest(digest):
                return digest
            response = await self._fetch(call, "GET", url, accept=MANIFEST_ACCEPT)
            digest = digest_of(response.body)
            sent = response.headers.get("Docker-Content-Digest", "")
            if is_digest(sent):
                call.parsed(verify_digest, response.body, sent)
            return digest

    async def resolve_tag(
        self, repository: CanonicalName | str, tag: str, known: TagRecord | None = None
    ) -> TagRecord:
        """What ``repository:tag`` points at now and when that image was built.

        With a ``known`` record this is a re-check: one HEAD, and nothing more while the digest is the one
        recorded (a re-pushed tag shows as a new digest, resolved as below). Without one, the manifest is
        fetched by tag at once (its digest, when already resolved, ends the lookup), then the config blob:
        two requests for a tag never seen, where a HEAD first would cost three.
        """
        name = as_canonical(repository)
        call = _Call(name, "manifest", f"manifest {tag}")
        with self.metrics.time_operation(name.host, "resolve_tag"):
            url = self._api_url(name, f"manifests/{quote(tag, safe='')}")
            preloaded = None
            digest = ""
            if known is not None:
                head = await self._fetch(call, "HEAD", url, accept=MANIFEST_ACCEPT)
                digest = head.headers.get("Docker-Content-Digest", "")
                if digest == known.digest:
                    return TagRecord(known.digest, known.created, time.time())
            if not is_digest(digest):
                preloaded = await self._fetch(call, "GET", url, accept=MANIFEST_ACCEPT)
                digest = preloaded.headers.get("Docker-Content-Digest", "")
                if not is_digest(digest):
                    digest = digest_of(preloaded.body)
                if known is not None and digest == known.digest:
                    return TagRecord(known.digest, known.created, time.time())
            created = await self._created_by_digest(name, digest, preloaded, 0)
            return TagRecord(digest, created, time.time())

    # Resolution: manifest -> (index -> platform manifest) -> config blob, each step cached by digest.
    # Content is verified against its digest, so an index can never lead back to itself through the cache.

    async def _created_by_digest(
        self, name: CanonicalName, digest: str, preloaded: _Response | None, depth: int
    ) -> datetime | None:
        self.metrics.observe_cache("manifest", digest in self._manifests)
        return await self._manifests.run(
            digest, lambda: self._created_by_manifest(name, digest, preloaded, depth)
        )

    async def _created_by_manifest(
        self, name: CanonicalName, digest: str, preloaded: _Response | None, depth: int
    ) -> datetime | None:
        call = _Call(name, "manifest", f"manifest {digest}")
        response = preloaded or await self._fetch(
            call, "GET", self._api_url(name, f"manifests/{digest}"), accept=MANIFEST_ACCEPT
        )
        call.parsed(verify_digest, response.body, digest)
        manifest = call.parsed(parse_image_manifest, response.body, response.headers.get("Content-Type"))
        if isinstance(manifest, ImageIndex):
            if depth >= _MAX_INDEX_DEPTH:
                raise call.error(
                    RegistryMalformedResponse, f"image indexes nested deeper than {_MAX_INDEX_DEPTH}"
                )
            entry = select_platform(manifest, self.config.platform)
            if entry is None:
                _log.info("%s@%s has no manifest for platform %s", name, digest, self.config.platform)
                return None
            return await self._created_by_digest(name, entry.digest, None, depth + 1)
        if not is_image_config(manifest.config):
            return None  # an OCI artifact (a Helm chart, a signature): no build time to read
        config_digest = manifest.config.digest
        self.metrics.observe_cache("config", config_digest in self._configs)
        return await self._configs.run(config_digest, lambda: self._created_by_config(name, config_digest))

    async def _created_by_config(self, name: CanonicalName, digest: str) -> datetime | None:
        call = _Call(name, "blob", f"config blob {digest}")
        response = await self._fetch(call, "GET", self._api_url(name, f"blobs/{digest}"), accept="*/*")
        call.parsed(verify_digest, response.body, digest)
        return call.parsed(created_from_config, response.body)

    # Authorization: anonymous, Basic, or Bearer tokens cached per scope

    async def _fetch(self, call: _Call, method: str, url: URL, *, accept: str) -> _Response:
        """One authorized request: answers at most one 401 challenge, then maps a non-200 to a typed error."""
        credentials = self._credentials.credentials_for(call.name)
        authority = _authority(url)
        known = self._challenges.get(authority)
        authorization = await self._authorization(call, known, credentials) if known else None
        response = await self._exchange(call, method, url, accept, authorization)
        if response.status == 401:
            challenge = preferred_challenge(
                parse_www_authenticate(response.headers.getall("WWW-Authenticate", []))
            )
            if challenge is None:
                raise _status_error(call, response)
            if authorization is not None and challenge.scheme == "basic":
                raise _status_error(call, response)  # our Basic credentials were just refused
            self._challenges[authority] = challenge
            if challenge.scheme == "bearer" and known is not None and known.scheme == "bearer":
                self._tokens.discard(self._token_key(known, call.name, credentials))
            authorization = await self._authorization(call, challenge, credentials)
            if authorization is None:
                raise call.error(
                    RegistryUnauthorized, f"{authority} requires credentials and none match", 401
                )
            response = await self._exchange(call, method, url, accept, authorization)
        if response.status != 200:
            raise _status_error(call, response)
        return response

    async def _authorization(
        self, call: _Call, challenge: Challenge, credentials: BasicCredentials | None
    ) -> str | None:
        if challenge.scheme == "basic":
            return credentials.authorization if credentials else None
        key = self._token_key(challenge, call.name, credentials)
        cached = self._tokens.peek(key)
        if _expired(cached):
            self._tokens.discard(key)
        token = await self._tokens.run(key, lambda: self._request_token(call, challenge, credentials))
        return f"Bearer {token.value}"

    @staticmethod
    def _token_key(
        challenge: Challenge, name: CanonicalName, credentials: BasicCredentials | None
    ) -> tuple[str, str | None, str, str | None]:
        return (
            challenge.realm or "",
            challenge.service,
            pull_scope(name),
            credentials.username if credentials else None,
        )

    async def _request_token(
        self, call: _Call, challenge: Challenge, credentials: BasicCredentials | None
    ) -> _Token:
        realm = URL(challenge.realm or "")
        token_call = _Call(call.name, "token", f"token from {realm}")
        if realm.scheme not in ("https", "http") or not realm.host:
            raise token_call.error(
                RegistryMalformedResponse, "the Bearer challenge's realm is not an http(s) URL"
            )
        if realm.scheme == "http" and _authority(realm) not in self.config.insecure_hosts:
            raise token_call.error(
                RegistryUnauthorized,
                f"the token service is plain http; list {_authority(realm)} in insecure_hosts to allow it",
            )
        query = {"scope": pull_scope(call.name)}
        if challenge.service:
            query["service"] = challenge.service
        authorization = credentials.authorization if credentials else None
        started = time.monotonic()
        response = await self._exchange(
            token_call, "GET", realm.update_query(query), "application/json", authorization
        )
        if response.status != 200:
            raise _status_error(token_call, response)
        value, lifetime = token_call.json_document(parse_token, response)
        lifetime = lifetime if lifetime is not None else _DEFAULT_TOKEN_LIFETIME
        return _Token(value, started + max(0.0, lifetime - _TOKEN_EXPIRY_MARGIN))

    # Transport: limits, retries, metrics

    def _api_url(self, name: CanonicalName, suffix: str) -> URL:
        host = api_host(name)
        scheme = "http" if host in self.config.insecure_hosts else "https"
        return URL.build(scheme=scheme, authority=host, path=f"/v2/{name.path}/{suffix}", encoded=True)

    def _limiter(self, registry: str) -> HostLimiter:
        limiter = self._limiters.get(registry)
        if limiter is None:
            limiter = HostLimiter(self.config.concurrency, self.config.requests_per_second, self.config.burst)
            self._limiters[registry] = limiter
        return limiter

    async def _exchange(
        self, call: _Call, method: str, url: URL, accept: str, authorization: str | None
    ) -> _Response:
        """Send with retries on 429, 5xx, connection errors and timeouts; return the final response."""
        policy = self.config.retry
        limiter = self._limiter(call.name.host)
        headers = {"Accept": accept, "User-Agent": self.config.user_agent}
        if authorization:
            headers["Authorization"] = authorization
        problem = "no attempt made"
        error_type: type[RegistryError] = RegistryUnavailable
        # GETs spend the budgets registries announce (Docker Hub counts manifest GETs; HEADs are free).
        spends = method == "GET" and call.kind != "token"
        for attempt in range(policy.attempts):
            try:
                async with limiter.slot(
                    call.kind if spends else None, max_wait=policy.max_retry_after
                ) as sent_at:
                    response, problem = await self._attempt(call, method, url, headers)
                    if response is not None:
                        self._observe_limits(limiter, call, response, spent=spends, sent_at=sent_at)
            except LimitTooLong as error:
                raise call.error(
                    RegistryRateLimited,
                    f"not sent: {error}, longer than the {policy.max_retry_after:g}s we wait",
                ) from None
            delay = backoff_delay(attempt, policy.base_delay, policy.max_delay, self._jitter())
            if response is None:
                error_type = RegistryUnavailable
            elif response.status == 429 or (
                response.status >= 500 and response.status not in _NOT_RETRIED_5XX
            ):
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
                error_type = RegistryRateLimited if response.status == 429 else RegistryUnavailable
                problem = f"HTTP {response.status}" + _registry_says(response)
                if retry_after is not None:
                    if retry_after > policy.max_retry_after:
                        raise call.error(
                            error_type, f"{problem}, Retry-After {retry_after:.0f}s", response.status
                        )
                    limiter.pause(retry_after)
                    delay = retry_after
            else:
                return response
            if attempt + 1 < policy.attempts:
                _log.info("%s: %s %s: %s; retrying in %.2fs", call.name.host, method, url, problem, delay)
                await asyncio.sleep(delay)
        raise call.error(error_type, f"{problem} (after {policy.attempts} attempts)")

    def _observe_limits(
        self, limiter: HostLimiter, call: _Call, response: _Response, *, spent: bool, sent_at: float
    ) -> None:
        """Slow down before the registry has to say 429: its announced budget, and a Retry-After on a
        response that is not an error (an error's Retry-After is handled with its retry)."""
        if call.kind == "token":
            return
        budget = parse_rate_budget(
            response.headers.get("RateLimit-Remaining"), response.headers.get("RateLimit-Reset")
        )
        if budget is not None:
            limiter.observe_budget(call.kind, budget.remaining, budget.seconds, spent=spent, sent_at=sent_at)
        if response.status < 400:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            if retry_after:
                limiter.pause(retry_after)

    async def _attempt(
        self, call: _Call, method: str, url: URL, headers: dict[str, str]
    ) -> tuple[_Response | None, str]:
        """One request. A transient failure returns (None, what happened); a TLS failure raises at once."""
        started = time.monotonic()
        code = "error"
        try:
            response = await self._send(method, url, headers)
            code = str(response.status)
            return response, ""
        except _BodyTooLarge:
            too_large = f"response larger than {self.config.max_body_bytes} bytes"
            raise call.error(RegistryMalformedResponse, too_large) from None
        except aiohttp.ClientSSLError as error:
            tls_failure = f"TLS failure talking to {_authority(url)}: {error}"
            raise call.error(RegistryUnavailable, tls_failure) from error
        except TimeoutError:
            code = "timeout"
            limits = self.config.timeouts
            return (
                None,
                f"timed out (connect {limits.connect:g}s, read {limits.read:g}s, total {limits.total:g}s)",
            )
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            return None, f"{type(error).__name__}: {error}"
        except aiohttp.TooManyRedirects as error:
            redirects = f"redirected {len(error.history)} times without an answer: a redirect loop"
            raise call.error(RegistryMalformedResponse, redirects) from None
        except aiohttp.ClientError as error:
            raise call.error(RegistryMalformedResponse, f"{type(error).__name__}: {error}") from error
        finally:
            self.metrics.observe_request(call.name.host, call.kind, code, time.monotonic() - started)

    async def _send(self, method: str, url: URL, headers: dict[str, str]) -> _Response:
        if self._closed:
            raise RuntimeError("RegistryClient used after close()")
        if self._session is None:
            self._session = self._session_factory()
        async with self._session.request(
            method, url, headers=headers, ssl=self._ssl.get(_authority(url), True), timeout=self._timeout
        ) as response:
            body = b"" if method == "HEAD" else await self._read_limited(response)
            return _Response(response.status, response.headers, body, response.url)

    async def _read_limited(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_body_bytes
        if response.content_length is not None and response.content_length > limit:
            raise _BodyTooLarge
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)


def _served_as(response: _Response) -> str:
    content_type = response.headers.get("Content-Type", "")
    if "json" in content_type.lower():
        return ""
    described = repr(content_type) if content_type else "no Content-Type"
    return f"; it was served as {described}, not JSON"


def _status_error(call: _Call, response: _Response) -> RegistryError:
    detail = f"{call.what}: HTTP {response.status}{_registry_says(response)}"
    return error_for_status(response.status, call.name.host, call.name.path, detail)


def _expired(token: asyncio.Task[_Token] | None) -> bool:
    return (
        token is not None
        and token.done()
        and not token.cancelled()
        and token.exception() is None
        and token.result().expires_at <= time.monotonic()
    )


def _registry_says(response: _Response) -> str:
    described = describe_error_body(response.body)
    return f" ({described})" if described else ""


class ScanCycle:
    """One scan over all HelmReleases: each repository's tags are listed once and each image's build time
    resolved once, however many HelmReleases ask and however concurrently. Failures are remembered too, so a
    broken registry is asked once per cycle. Make a new one per cycle; tags move between cycles."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._tags: TaskMemo[CanonicalName, tuple[str, ...]] = TaskMemo(forget_failures=False)
        self._created: TaskMemo[tuple[CanonicalName, str], datetime | None] = TaskMemo(forget_failures=False)
        self._digests: TaskMemo[tuple[CanonicalName, str], str] = TaskMemo(forget_failures=False)
        self._resolved: TaskMemo[tuple[CanonicalName, str], TagRecord] = TaskMemo(forget_failures=False)

    async def list_tags(self, repository: CanonicalName | str) -> tuple[str, ...]:
        name = as_canonical(repository)
        self.client.metrics.observe_cache("cycle_tags", name in self._tags)
        return await self._tags.run(name, lambda: self.client.list_tags(name))

    async def image_created(self, repository: CanonicalName | str, tag: str) -> datetime | None:
        key = (as_canonical(repository), tag)
        self.client.metrics.observe_cache("cycle_created", key in self._created)
        return await self._created.run(key, lambda: self.client.image_created(key[0], tag))

    async def tag_digest(self, repository: CanonicalName | str, tag: str) -> str:
        key = (as_canonical(repository), tag)
        self.client.metrics.observe_cache("cycle_digest", key in self._digests)
        return await self._digests.run(key, lambda: self.client.tag_digest(key[0], tag))

    async def resolve_tag(
        self, repository: CanonicalName | str, tag: str, known: TagRecord | None = None
    ) -> TagRecord:
        """``RegistryClient.resolve_tag`` at most once per tag per cycle."""
        key = (as_canonical(repository), tag)
        self.client.metrics.observe_cache("cycle_resolved", key in self._resolved)
        return await self._resolved.run(key, lambda: self.client.resolve_tag(key[0], tag, known))
