"""A Docker token service (the registry token authentication spec) for the test registry's ``auth: token``.

It signs ES256 JWTs with a key whose certificate (issued by a throwaway CA) travels in the token's ``x5c``
header; the registry trusts the CA (``rootcertbundle``), so it checks the token as it would Docker Hub's or
Harbor's. ``GET /token?service=..&scope=repository:<name>:pull`` with Basic credentials: right ones get the
scope's pull access, none or wrong ones a 401. Every request is recorded, so a test can count how often a
client asks for a token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.pki import _issue, _name
from tests.support.procs import free_port

SERVICE = "helmrelease-test-registry"
ISSUER = "helmrelease-test-token-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    username: str | None  # from the Basic credentials, None when there were none
    scope: str | None
    granted: bool
    at: float  # time.monotonic()


class TokenServer:
    """``expires_in``: the lifetime it announces and writes into ``exp`` (a client may reuse a token so long)."""

    def __init__(self, directory: Path, username: str, password: str, *, expires_in: int = 300) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = password
        self.expires_in = expires_in
        self.port = free_port()
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("helmrelease-test-token-ca")
        ca_cert = _issue(ca_name, ca_key, ca_name, ca_key, is_ca=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        signing_cert = _issue(_name("helmrelease-test-token-signer"), self._key, ca_name, ca_key)
        self._x5c = [base64.b64encode(signing_cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.root_bundle = directory / "token-ca.pem"
        self.root_bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"http://{self.host}/token"

    def start(self) -> TokenServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def granted(self) -> list[TokenRequest]:
        with self._lock:
            return [request for request in self.requests if request.granted]

    def refused(self) -> list[TokenRequest]:
        with self._lock:
            return [request for request in self.requests if not request.granted]

    def sign(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(dt.datetime.now(dt.UTC).timestamp())
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _credentials(self, header: str | None) -> tuple[str, str] | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            username, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return username, password

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                credentials = server._credentials(self.headers.get("Authorization"))
                scope = query.get("scope")
                right = credentials == (server.username, server.password)
                granted = parts.path == "/token" and query.get("service") == SERVICE and right
                with server._lock:
                    server.requests.append(
                        TokenRequest(
                            credentials[0] if credentials else None, scope, granted, time.monotonic()
                        )
                    )
                if not granted:
                    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="helmrelease-test-token"')
                else:
                    access: list[dict[str, object]] = []
                    if scope and scope.count(":") >= 2:
                        kind, _, rest = scope.partition(":")
                        name, _, actions = rest.rpartition(":")
                        wanted = [action for action in actions.split(",") if action == "pull"]
                        access = [{"type": kind, "name": name, "actions": wanted}]
                    token = server.sign(server.username, access)
                    body = json.dumps(
                        {
                            "token": token,
                            "access_token": token,
                            "expires_in": server.expires_in,
                            "issued_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
