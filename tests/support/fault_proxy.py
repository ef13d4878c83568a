"""The one HTTP proxy of the tests: in front of the test registry or chart repository, it breaks chosen
requests in chosen ways until healed, holds requests back, or keeps a Docker Hub style pull budget.

The server behind it answers everything (``forward``). A ``Fault`` names what goes wrong (``Kind``) and which
requests it hits; several can be injected at once (the first that hits a request answers it), and ``heal``
makes the proxy an honest one again. ``Kind.ANSWER`` answers with a body of the test's choosing (a status, a
slow start, a drip, a body too large to hold twice). With ``page_size=1`` the proxy pages tag lists one tag per
page, so a fault can hit the page that holds the newest tag while the earlier pages answer: a client that
decided from a partial list would write a wrong tag. ``hold`` stalls every request (a server that stopped
answering); a ``PullBudget`` counts manifest GETs against a fixed window and says so in headers
(``RateLimit-Remaining: N;w=W``, ``RateLimit-Reset``, a 429 once it is spent), as Docker Hub does. ``route``
maps the path asked for to the path forwarded (one proxy, many chart repository URLs). Every request is logged
with its arrival and answer times, so a test can prove a ``Retry-After`` was honoured or a budget kept.
"""

from __future__ import annotations

import bisect
import http.client
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.support.procs import free_port

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


def forward(
    target: str, method: str, path: str, headers: Iterable[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request on to the server at ``target``: its status, end-to-end headers and body."""
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


class Kind(StrEnum):
    """What goes wrong."""

    TOO_MANY = "429"
    TOO_MANY_RETRY_AFTER = "429-retry-after"
    INTERNAL = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    RESET = "connection-reset"
    TIMEOUT = "timeout"
    DRIP = "slow-drip"
    TRUNCATED = "truncated-json"
    MALFORMED = "malformed-json"
    CONTENT_TYPE = "login-page"
    DIGEST = "digest-mismatch"
    REDIRECT_LOOP = "redirect-loop"
    HUGE = "100k-tags"
    LINK_LOOP = "link-to-first-page"
    ANSWER = "answer"  # the fault's ``answer``, whatever the server would say


RETRY_AFTER = 2  # seconds, what a 429-retry-after says
HUGE_TAGS = 100_000
DRIP_EVERY = 0.3  # seconds between the bytes of a slow drip: under the client's read timeout
_HUGE = [f"0-build-{n:06d}" for n in range(HUGE_TAGS)]
_ERROR_JSON = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
_BAD_GATEWAY = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
_LOGIN = b"<!DOCTYPE html><html><body><form action=/login>Please sign in</form></body></html>"


@dataclass(frozen=True)
class Answer:
    """What ``Kind.ANSWER`` sends: ``status`` and ``body`` (bytes, or a callable giving the chunks, for a body
    too large to hold twice, with its ``length``), after ``delay`` seconds, ``drip`` seconds between chunks."""

    status: int = 200
    body: bytes | Callable[[], Iterable[bytes]] = b""
    length: int | None = None  # Content-Length of a chunked body (None: the body is bytes)
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0


@dataclass(frozen=True)
class Fault:
    """``kind`` for every request ``hits`` picks (method, path with query, as asked); ``swap`` for a digest
    mismatch: the tag whose manifest body is served under the hit tag's digest; ``answer`` for ``Kind.ANSWER``."""

    kind: Kind
    hits: Callable[[str, str], bool]
    swap: str | None = None
    answer: Answer | None = None


@dataclass(frozen=True)
class PullBudget:
    """``limit`` manifest GETs per ``window`` seconds (windows start at the first request)."""

    limit: int
    window: float


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: str  # the status forwarded, "fault <kind>", or "refused" for a 429 of the pull budget
    arrived: float  # time.monotonic()
    answered: float


def _query(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query))


def tag_page_after(tag: str) -> Callable[[str, str], bool]:
    """The tag-list page that starts after ``tag`` (``last=tag``): the one a partial list would miss."""
    return lambda method, path: "/tags/list" in path and _query(path).get("last") == tag


def any_tag_page(method: str, path: str) -> bool:
    return "/tags/list" in path


def manifest_of(tag: str) -> Callable[[str, str], bool]:
    return lambda method, path: urlsplit(path).path.endswith(f"/manifests/{tag}")


class FaultProxy:
    def __init__(
        self,
        target: str,
        *,
        page_size: int | None = None,
        budget: PullBudget | None = None,
        route: Callable[[str], str] | None = None,
    ) -> None:
        self.target = target  # host:port of the server behind
        self.port = free_port()
        self.page_size = page_size
        self.budget = budget
        self.route = route
        self.faults: tuple[Fault, ...] = ()
        self.log: list[Logged] = []
        #: Requests waiting for `release` right now.
        self.stalled = 0
        self._lock = threading.Lock()
        self._healed = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._holding: Callable[[str, str], bool] | None = None  # None: `hold` stalls every request
        self._window_start: float | None = None
        self._used = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._healed.set()
        self._open.set()
        self._server.shutdown()
        self._server.server_close()

    def inject(self, *faults: Fault) -> None:
        """Break what ``faults`` hit (the first that hits a request answers it), instead of what broke before."""
        self._healed.clear()
        self.faults = faults

    def heal(self) -> None:
        self.faults = ()
        self._healed.set()

    def hold(self, matching: Callable[[str, str], bool] | None = None) -> None:
        """Stall every request (or those ``matching`` picks by method and path) until ``release``: a server
        that stopped answering, or one request held at a known point of a scan."""
        self._holding = matching
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def entries(self) -> list[Logged]:
        with self._lock:
            return list(self.log)

    def faulted(self) -> list[Logged]:
        """Requests that met a fault."""
        return [entry for entry in self.entries() if entry.status.startswith("fault ")]

    def forwarded(self) -> list[Logged]:
        """Requests the server behind answered."""
        return [entry for entry in self.entries() if entry.status.isdigit()]

    def refused(self) -> list[Logged]:
        """Requests the pull budget answered with a 429."""
        return [entry for entry in self.entries() if entry.status == "refused"]

    def manifest_gets(self) -> list[float]:
        """When each forwarded manifest GET arrived."""
        return [e.arrived for e in self.forwarded() if e.method == "GET" and "/manifests/" in e.path]

    def _hit(self, method: str, path: str) -> Fault | None:
        return next((fault for fault in self.faults if fault.hits(method, path)), None)

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
            left = self._window_start + self.budget.window - now
            headers = {
                "RateLimit-Limit": f"{self.budget.limit};w={self.budget.window:g}",
                "RateLimit-Remaining": f"{self.budget.limit - self._used};w={self.budget.window:g}",
                "RateLimit-Reset": str(max(1, math.ceil(left))),
            }
            if not allowed:
                headers["Retry-After"] = str(max(1, math.ceil(left)))
            return allowed, headers

    def _record(self, method: str, path: str, status: str, arrived: float) -> None:
        with self._lock:
            self.log.append(Logged(method, path, status, arrived, time.monotonic()))

    # What the server says, routed, and tag lists paged by ``page_size`` or (for the huge list) as asked

    def _upstream(
        self, method: str, path: str, headers: list[tuple[str, str]]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.page_size is not None and "/tags/list" in path:
            parts = urlsplit(path)
            query = {**_query(path), "n": str(self.page_size)}
            path = f"{parts.path}?{urlencode(query)}"
        return forward(self.target, method, self.route(path) if self.route else path, headers)

    def _huge_page(
        self, method: str, path: str, headers: list[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], bytes]:
        """A page of the real tags behind 100 000 others that sort first: the real ones are on the last page."""
        parts = urlsplit(path)
        _, _, body = forward(self.target, "GET", parts.path, headers)
        document = json.loads(body)
        tags = _HUGE + sorted(document.get("tags") or [])  # sorted: the real tags sort after "0-"
        query = _query(path)
        size = min(int(query.get("n", "100")), 1000)
        start = 0
        if "last" in query:
            start = bisect.bisect_right(tags, query["last"])
        page = tags[start : start + size]
        headers_out = [("Content-Type", "application/json")]
        if start + size < len(tags):
            link = f"{parts.path}?{urlencode({'n': str(size), 'last': page[-1]})}"
            headers_out.append(("Link", f'<{link}>; rel="next"'))
        return headers_out, json.dumps({"name": document.get("name"), "tags": page}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve()

            def do_GET(self) -> None:
                self._serve()

            def _serve(self) -> None:
                holding = proxy._holding
                if holding is None or holding(self.command, self.path):
                    with proxy._lock:
                        proxy.stalled += 1
                    proxy._open.wait()
                    with proxy._lock:
                        proxy.stalled -= 1
                arrived = time.monotonic()
                fault = proxy._hit(self.command, self.path)
                if fault is not None:
                    hangs = fault.kind in (Kind.TIMEOUT, Kind.DRIP, Kind.ANSWER)  # logged as they begin
                    if hangs:
                        proxy._record(self.command, self.path, f"fault {fault.kind}", arrived)
                    self._fault(fault)
                    if not hangs:
                        proxy._record(self.command, self.path, f"fault {fault.kind}", arrived)
                    return
                allowed, extra = proxy._spend(self.command, self.path)
                if not allowed:
                    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}'
                    send(self, 429, [*extra.items(), ("Content-Type", "application/json")], body)
                    proxy._record(self.command, self.path, "refused", arrived)
                    return
                status, headers, body = proxy._upstream(self.command, self.path, list(self.headers.items()))
                send(self, status, headers + list(extra.items()), body)
                proxy._record(self.command, self.path, str(status), arrived)

            def _fault(self, fault: Fault) -> None:
                kind = fault.kind
                incoming = list(self.headers.items())
                if kind in (Kind.TOO_MANY, Kind.TOO_MANY_RETRY_AFTER):
                    headers = [("Content-Type", "application/json")]
                    if kind is Kind.TOO_MANY_RETRY_AFTER:
                        headers.append(("Retry-After", str(RETRY_AFTER)))
                    send(self, 429, headers, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
                elif kind in (Kind.INTERNAL, Kind.UNAVAILABLE):
                    send(self, int(kind.value), [("Content-Type", "application/json")], _ERROR_JSON)
                elif kind is Kind.BAD_GATEWAY:
                    send(self, 502, [("Content-Type", "text/html")], _BAD_GATEWAY)
                elif kind is Kind.RESET:
                    self._reset()
                elif kind is Kind.TIMEOUT:
                    proxy._healed.wait(15)  # say nothing; the client gives up first
                    self.close_connection = True
                elif kind is Kind.DRIP:
                    self._drip(proxy._upstream(self.command, self.path, incoming))
                elif kind is Kind.TRUNCATED:
                    status, headers, body = proxy._upstream(self.command, self.path, incoming)
                    send(self, status, headers, body[: len(body) // 2])
                elif kind is Kind.MALFORMED:
                    send(self, 200, [("Content-Type", "application/json")], b"{'tags': ['1.0.2']}")
                elif kind is Kind.CONTENT_TYPE:
                    send(self, 200, [("Content-Type", "text/html; charset=utf-8")], _LOGIN)
                elif kind is Kind.DIGEST:
                    assert fault.swap is not None
                    status, headers, _ = proxy._upstream(self.command, self.path, incoming)
                    swapped = self.path.rsplit("/", 1)[0] + f"/{fault.swap}"
                    _, _, body = proxy._upstream("GET", swapped, incoming)
                    kept = [(n, v) for n, v in headers if n.lower() != "content-length"]
                    send(self, status, kept, body)
                elif kind is Kind.REDIRECT_LOOP:
                    query = _query(self.path)
                    hop = {**query, "hop": str(1 - int(query.get("hop", "0")))}
                    location = f"{urlsplit(self.path).path}?{urlencode(hop)}"
                    send(self, 307, [("Location", location)], b"")
                elif kind is Kind.HUGE:
                    headers, body = proxy._huge_page(self.command, self.path, incoming)
                    send(self, 200, headers, body)
                elif kind is Kind.ANSWER:
                    assert fault.answer is not None
                    self._answer(fault.answer)
                elif kind is Kind.LINK_LOOP:
                    status, headers, body = proxy._upstream(self.command, self.path, incoming)
                    first = f"{urlsplit(self.path).path}?n=1000"
                    kept = [(n, v) for n, v in headers if n.lower() != "link"]
                    send(self, status, [*kept, ("Link", f'<{first}>; rel="next"')], body)

            def _answer(self, answer: Answer) -> None:
                """Send ``answer``; a client that gives up meanwhile (a timeout) ends it quietly."""
                if answer.delay:
                    proxy._healed.wait(answer.delay)
                chunks = [answer.body] if isinstance(answer.body, bytes) else answer.body()
                length = len(answer.body) if isinstance(answer.body, bytes) else answer.length
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        if answer.drip:
                            proxy._healed.wait(answer.drip)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _reset(self) -> None:
                """Close with a TCP RST (SO_LINGER 0) instead of an answer."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _drip(self, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers:
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for index in range(len(body)):
                        if proxy._healed.wait(DRIP_EVERY):
                            break
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up
                self.close_connection = True

        return Handler
