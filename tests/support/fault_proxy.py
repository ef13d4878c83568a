"""An HTTP proxy in front of the test registry that breaks chosen requests in chosen ways, until healed.

The registry behind it answers everything (``registry_proxy.forward``); the proxy pages tag lists one tag per
page (it asks the registry for ``n=1``), so a fault can hit the page that holds the newest tag while the
earlier pages answer: a client that decided from a partial list would write a wrong tag. A ``Fault`` names
what goes wrong and which requests it hits; ``heal`` makes the proxy an honest one again. Every request is
logged with its arrival and answer times, so a test can prove a ``Retry-After`` was honoured.
"""

from __future__ import annotations

import bisect
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.support.procs import free_port
from tests.support.registry_proxy import forward, send


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


RETRY_AFTER = 2  # seconds, what a 429-retry-after says
HUGE_TAGS = 100_000
DRIP_EVERY = 0.3  # seconds between the bytes of a slow drip: under the client's read timeout
_HUGE = [f"0-build-{n:06d}" for n in range(HUGE_TAGS)]
_ERROR_JSON = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
_BAD_GATEWAY = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
_LOGIN = b"<!DOCTYPE html><html><body><form action=/login>Please sign in</form></body></html>"


@dataclass(frozen=True)
class Fault:
    """``kind`` for every request ``hits`` picks (method, path with query); ``swap`` for a digest mismatch:
    the tag whose manifest body is served under the hit tag's digest."""

    kind: Kind
    hits: Callable[[str, str], bool]
    swap: str | None = None


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: str  # the status sent, or the fault's kind when there was none
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
    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.fault: Fault | None = None
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._healed = threading.Event()
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
        self._server.shutdown()
        self._server.server_close()

    def inject(self, fault: Fault) -> None:
        self._healed.clear()
        self.fault = fault

    def heal(self) -> None:
        self.fault = None
        self._healed.set()

    def faulted(self) -> list[Logged]:
        """Requests that met the fault."""
        with self._lock:
            return [entry for entry in self.log if entry.status.startswith("fault ")]

    def _record(self, method: str, path: str, status: str, arrived: float) -> None:
        with self._lock:
            self.log.append(Logged(method, path, status, arrived, time.monotonic()))

    # What the registry says, paged by one tag or (for the huge list) by what the client asked

    def _upstream(
        self, method: str, path: str, headers: list[tuple[str, str]]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if "/tags/list" in path:
            parts = urlsplit(path)
            query = {**_query(path), "n": "1"}
            path = f"{parts.path}?{urlencode(query)}"
        return forward(self.target, method, path, headers)

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
                arrived = time.monotonic()
                fault = proxy.fault
                if fault is not None and fault.hits(self.command, self.path):
                    hangs = fault.kind in (Kind.TIMEOUT, Kind.DRIP)  # logged as they begin
                    if hangs:
                        proxy._record(self.command, self.path, f"fault {fault.kind}", arrived)
                    self._fault(fault)
                    if not hangs:
                        proxy._record(self.command, self.path, f"fault {fault.kind}", arrived)
                    return
                status, headers, body = proxy._upstream(self.command, self.path, list(self.headers.items()))
                send(self, status, headers, body)
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
                elif kind is Kind.LINK_LOOP:
                    status, headers, body = proxy._upstream(self.command, self.path, incoming)
                    first = f"{urlsplit(self.path).path}?n=1000"
                    kept = [(n, v) for n, v in headers if n.lower() != "link"]
                    send(self, status, [*kept, ("Link", f'<{first}>; rel="next"')], body)

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
