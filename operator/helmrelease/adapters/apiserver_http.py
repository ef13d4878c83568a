"""The HTTP transport of `KubeClient`'s REST calls: aiohttp on the event loop, configured like the kubernetes client.

The kubernetes client is synchronous, so each call took a worker thread, a hop there and back, and the client's
own request building: about 1 ms of the operator's CPU per request, of which the bytes on the wire were the least.
A resync with drift checks sends four requests per release, an install six: this transport sends them from the
loop for about 0.45 ms each. Credentials, TLS, proxy and timeouts come from the client's `Configuration`, read on
every request where they may change (a refreshed token), so both clients act as the same identity.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from kubernetes import client as k8s
from yarl import URL

#: The audit event raised just before each request goes out, with its method, path and body.
AUDIT_EVENT = "helmrelease.kube.request"


class TransportError(Exception):
    """The request got no HTTP answer (refused, reset, timed out); the message says which, in one line."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: its status, reason, headers and undecoded body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    data: bytes


def ssl_context(configuration: k8s.Configuration) -> ssl.SSLContext:
    """TLS as the kubeconfig (or the service account) says: its CA or the system's, its client certificate."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def auth_headers(configuration: k8s.Configuration) -> dict[str, str]:
    """The credentials header(s) of the configuration, fresh: `auth_settings` runs the client's token refresh hook
    (the service account token is rotated on disk)."""
    headers = {}
    settings = cast(Mapping[str, Mapping[str, Any]], configuration.auth_settings())  # TypedDicts
    for setting in settings.values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[str(setting["key"])] = str(setting["value"])
    return headers


def problem(error: BaseException, request_timeout: tuple[float, float]) -> str:
    """One line for a request that got no answer (`request_timeout`: the connect and read timeouts it had)."""
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        reason = os.strerror(cause.errno) if cause.errno else str(cause)  # not "Connect call failed (...)"
        return f"cannot connect to {error.host}:{error.port}: {reason}"
    connect, read = request_timeout
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return f"no connection within {connect:g}s (the connect timeout)"
    if isinstance(error, (aiohttp.SocketTimeoutError, TimeoutError)):
        return f"no answer within {read:g}s (the read timeout)"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without an answer"
    if isinstance(error, aiohttp.ClientOSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class ApiTransport:
    """One connection pool to the API server per event loop, for every `KubeClient` built from one configuration
    (the impersonating ones add their header per request)."""

    def __init__(self, configuration: k8s.Configuration, request_timeout: tuple[float, float]) -> None:
        self.configuration = configuration
        self._request_timeout = request_timeout
        connect, read = request_timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._base = configuration.host.rstrip("/")
        self._proxy = self._proxy_for(configuration)

    @staticmethod
    def _proxy_for(configuration: k8s.Configuration) -> str | None:
        proxy: str | None = configuration.proxy
        if not proxy:
            return None
        host = urlsplit(configuration.host).hostname or ""
        no_proxy = getattr(configuration, "no_proxy", None)
        if no_proxy and urllib.request.proxy_bypass_environment(host, {"no": no_proxy}):  # type: ignore[attr-defined]
            return None
        return proxy

    def _pool(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A pool belongs to its loop; one of an earlier loop (a CLI's earlier asyncio.run) is left to it.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context(self.configuration)),
                timeout=self._timeout,
                trust_env=False,  # the configuration's proxy, as the kubernetes client's
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        headers: Mapping[str, str],
    ) -> Answer:
        """One request; raises `TransportError` when no answer came. A request the server hung up on (a pooled
        connection it had just closed as idle) is sent once more on a new connection: by aiohttp for the idempotent
        methods, here for PATCH (the merge patches sent here are idempotent too). A POST is not sent twice."""
        url = URL(self._base + path, encoded=True)  # paths are built quoted (names come from tenants)
        if query:
            url = url.update_query(dict(query))
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        # What Python's http.client raises for the kubernetes client: the crash tests stop the process here, before
        # anything of the request is out (tests/support/write_gate.py). Without an audit hook it costs nothing.
        sys.audit(AUDIT_EVENT, method, path, data or b"")
        request_headers = {**headers, **auth_headers(self.configuration)}
        for attempt in (1, 2):
            try:
                async with self._pool().request(
                    method,
                    url,
                    data=data,
                    headers=request_headers,
                    proxy=self._proxy,
                    proxy_headers=self.configuration.proxy_headers,
                    server_hostname=self.configuration.tls_server_name or None,
                ) as response:
                    return Answer(
                        response.status, response.reason or "", response.headers, await response.read()
                    )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                if attempt == 2 or method != "PATCH" or isinstance(error, aiohttp.ClientConnectorError):
                    raise TransportError(problem(error, self._request_timeout)) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                raise TransportError(problem(error, self._request_timeout)) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
