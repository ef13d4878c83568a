"""An HTTP proxy in front of the test registry: a registry host of its own that can stall, or that keeps a
Docker Hub style pull budget (``RateLimit-Remaining: N;w=W`` and ``RateLimit-Reset``, a 429 once it is spent).

The registry behind it answers everything; the proxy only holds requests back (``hold``/``release``) or
counts manifest GETs against a fixed window and says so in headers, as Docker Hub does. It records what it
forwarded and every 429 it gave, so a test can prove the client slowed down before one.

It also stands in front of the chart repository: ``route`` maps the path asked for to the path forwarded (one
proxy, many repository URLs: ``/<scenario>/index.yaml`` → ``/index.yaml``), and ``fault`` answers a request
itself instead (a status, a body of the test's choosing, a slow drip), decided per request, so a test heals a
fault by changing what ``fault`` returns.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.procs import free_port

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


def forward(
    target: str, method: str, path: str, headers: Iterable[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request on to the registry at ``target``: its status, end-to-end headers and body."""
    upstream = http.client.HTTPConnection(target, timeout=30)
    try:
        sent = {name: value for name, value in headers if name.lower() not in _HOP_BY_HOP | {"host"}}
        sent["Host"] = target
        upstream.request(method, path, headers=sent)
        response = upstream.getresponse()
        body = response.read()
        kept = [(name, value) for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP]
        if method == "HEAD" and (length := response.getheader("Content-Length")):
            kept.append(("Content-Length", length))
        return response.status, kept, body
    finally:
        upstream.close()


def send(
    handler: BaseHTTPRequestHandler, status: int, headers: Iterable[tuple[str, str]], body: bytes
) -> None:
    """Answer ``handler``'s request; a Content-Length of the body unless the headers (a HEAD's) carry one."""
    handler.send_response(status)
    has_length = False
    for name, value in headers:
        has_length = has_length or name.lower() == "content-length"
        handler.send_header(name, value)
    if not has_length:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@dataclass(frozen=True)
class PullBudget:
    """``limit`` manifest GETs per ``window`` seconds (windows start at the first request)."""

    limit: int
    window: float


@dataclass(frozen=True)
class Fault:
    """An answer the proxy gives instead of forwarding: ``status`` and ``body`` (bytes, or a callable giving the
    chunks, for a body too large to hold twice), after ``delay`` seconds, with ``drip`` seconds between chunks."""

    status: int = 200
    body: bytes | Callable[[], Iterable[bytes]] = b""
    length: int | None = None  # Content-Length of a chunked body (None: the body is bytes)
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0


#: Decides per request (method, path as asked) whether the proxy answers itself.
FaultPlan = Callable[[str, str], Fault | None]


class RegistryProxy:
    def __init__(
        self,
        target: str,
        budget: PullBudget | None = None,
        *,
        route: Callable[[str], str] | None = None,
        fault: FaultPlan | None = None,
    ) -> None:
        self.target = target  # host:port of the registry
        self.port = free_port()
        self.budget = budget
        self.route = route
        self.fault = fault
        self.asked: list[tuple[str, str, float]] = []  # every request, faulted or not, as asked
        self.forwarded: list[tuple[str, str, float]] = []  # (method, path, time.monotonic())
        self.refused: list[tuple[str, float]] = []  # (path, time.monotonic()) of every 429 given
        #: Requests waiting for `release` right now.
        self.stalled = 0
        self._open = threading.Event()
        self._open.set()
        self._holding: Callable[[str, str], bool] | None = None  # None: `hold` stalls every request
        self._stopped = threading.Event()  # ends the delays of faults still being answered
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._used = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._open.set()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, matching: Callable[[str, str], bool] | None = None) -> None:
        """Stall every request (or those ``matching`` picks by method and path) until ``release``: a registry
        that stopped answering, or one request held at a known point of a scan."""
        self._holding = matching
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def manifest_gets(self) -> list[float]:
        return [at for method, path, at in self.forwarded if method == "GET" and "/manifests/" in path]

    def _spend(self, method: str, path: str) -> tuple[bool, dict[str, str]]:
        """Whether this request may go on, and the budget headers of the answer."""
        if self.budget is None or "/manifests/" not in path:
            return True, {}
        with self._lock:
            now = time.monotonic()
            if self._window_start is None or now >= self._window_start + self.budget.window:
                self._window_start, self._used = now, 0
            allowed = True
            if method == "GET":
                allowed = self._used < self.budget.limit
                if allowed:
                    self._used += 1
                else:
                    self.refused.append((path, now))
            left = self._window_start + self.budget.window - now
            headers = {
                "RateLimit-Limit": f"{self.budget.limit};w={self.budget.window:g}",
                "RateLimit-Remaining": f"{self.budget.limit - self._used};w={self.budget.window:g}",
                "RateLimit-Reset": str(max(1, math.ceil(left))),
            }
            if not allowed:
                headers["Retry-After"] = str(max(1, math.ceil(left)))
            return allowed, headers

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._forward()

            def do_GET(self) -> None:
                self._forward()

            def _forward(self) -> None:
                holding = proxy._holding
                if holding is None or holding(self.command, self.path):
                    with proxy._lock:
                        proxy.stalled += 1
                    proxy._open.wait()
                    with proxy._lock:
                        proxy.stalled -= 1
                with proxy._lock:
                    proxy.asked.append((self.command, self.path, time.monotonic()))
                fault = proxy.fault(self.command, self.path) if proxy.fault else None
                if fault is not None:
                    self._answer(fault)
                    return
                allowed, extra = proxy._spend(self.command, self.path)
                if not allowed:
                    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}'
                    send(self, 429, [*extra.items(), ("Content-Type", "application/json")], body)
                    return
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path, time.monotonic()))
                path = proxy.route(self.path) if proxy.route else self.path
                status, headers, body = forward(proxy.target, self.command, path, self.headers.items())
                send(self, status, headers + list(extra.items()), body)

            def _answer(self, fault: Fault) -> None:
                """Answer with ``fault``; a client that gives up meanwhile (a timeout) ends it quietly."""
                if fault.delay:
                    proxy._stopped.wait(fault.delay)
                chunks = [fault.body] if isinstance(fault.body, bytes) else fault.body()
                length = len(fault.body) if isinstance(fault.body, bytes) else fault.length
                try:
                    self.send_response(fault.status)
                    for name, value in fault.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        if fault.drip:
                            proxy._stopped.wait(fault.drip)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler
