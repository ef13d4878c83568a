"""The sidecar's webhook receivers, ``POST /hooks/<sender>``: authenticated, bounded, and only ever a hint.

A request that passes is answered 202 and names repositories to rescan at once (``push.PushRescans``); what
moves is still decided from the registry's own tag list, so the worst a sender can do is ask for a scan.
Authentication, as each sender can be configured (one shared token, from ``--webhook-token-file``):

- ``distribution`` and ``harbor``: ``Authorization: Bearer <token>`` (the registry's endpoint ``headers``,
  Harbor's "Auth Header");
- ``dockerhub`` and ``quay``: they cannot send headers, so ``?token=<token>`` in the URL counts too;
- ``ghcr``: GitHub signs the body: ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body, the token as the
  webhook's secret>``.

Tokens and signatures are compared in constant time. A refused request (401 unauthenticated, 400 malformed,
413 too large, 408 too slow, 503 too many at once) changes nothing, counts in
``helmrelease_webhook_requests_total{receiver,outcome}`` and is a WARNING log line, at most one per receiver
and outcome every ``LOG_EVERY`` seconds (with the number left unlogged), so a flood cannot flood the log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from helmrelease.adapters.http_server import PostRoute, Refusal, Reply, RequestHead, refusal_status
from helmrelease.automation.notifications import PayloadError, Pushed, Sender, parse_notification

_log = logging.getLogger(__name__)

HOOKS_PREFIX: Final = "/hooks/"
#: Bodies larger than this are refused (413) before they are read whole; senders' pushes are a few KiB.
MAX_BODY: Final = 1024 * 1024
#: Seconds a body may take to arrive whole.
READ_TIMEOUT: Final = 10.0
LOG_EVERY: Final = 10.0
SIGNATURE_HEADER: Final = "x-hub-signature-256"
GITHUB_EVENT_HEADER: Final = "x-github-event"
#: Senders that cannot set a header: the token may be a query parameter of the URL they are given.
QUERY_TOKEN_SENDERS: Final = frozenset({Sender.DOCKERHUB, Sender.QUAY})
_JSON: Final = "application/json"


class Outcome(StrEnum):
    """What became of one webhook request, as a metric label."""

    ACCEPTED = "accepted"  # named pushed images: their releases are rescanned
    IGNORED = "ignored"  # well-formed, but no push of a tag (a pull, a ping, an npm package)
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    TOO_SLOW = "too_slow"
    BUSY = "busy"


_STATUS: Final = {
    Outcome.ACCEPTED: 202,
    Outcome.IGNORED: 202,
    Outcome.UNAUTHORIZED: 401,
    Outcome.MALFORMED: 400,
}
_REFUSAL_OUTCOME: Final = {
    Refusal.TOO_LARGE: Outcome.TOO_LARGE,
    Refusal.TOO_SLOW: Outcome.TOO_SLOW,
    Refusal.BUSY: Outcome.BUSY,
}


@dataclass(frozen=True)
class WebhookMetrics:
    """Requests by receiver and outcome, images named by accepted pushes, and the rescans they caused."""

    requests: Counter
    pushed_images: Counter
    rescans: Counter
    rescan_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry, namespace: str = "helmrelease") -> WebhookMetrics:
        return cls(
            requests=Counter(
                "webhook_requests",
                "Webhook requests received, by receiver and outcome (accepted, ignored, unauthorized, ...).",
                ["receiver", "outcome"],
                namespace=namespace,
                registry=registry,
            ),
            pushed_images=Counter(
                "webhook_pushed_images",
                "Images named by accepted push notifications, by receiver.",
                ["receiver"],
                namespace=namespace,
                registry=registry,
            ),
            rescans=Counter(
                "webhook_rescans",
                "Rescans run for pushed images (a burst of pushes is one rescan).",
                namespace=namespace,
                registry=registry,
            ),
            rescan_seconds=Histogram(
                "webhook_rescan_duration_seconds",
                "Duration of one rescan of the releases using pushed images.",
                namespace=namespace,
                registry=registry,
                buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            ),
        )


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), compared in constant time."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    return scheme.lower() == "bearer" and _same(credentials.strip(), token)


def query_token_matches(query: Mapping[str, str], token: str) -> bool:
    return _same(query.get("token", ""), token)


def signature_matches(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """GitHub's ``X-Hub-Signature-256``: ``sha256=`` and the hex HMAC-SHA256 of the body, constant time."""
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _same(headers.get(SIGNATURE_HEADER, "").strip().lower(), expected)


class RefusalLog:
    """Warns once per key and ``every`` seconds, counting the refusals it did not log in between."""

    def __init__(self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def warn(self, key: tuple[str, str], message: str) -> bool:
        """Log ``message`` unless one with this key was logged less than ``every`` seconds ago."""
        now = self._clock()
        last = self._state.get(key)
        if last is not None and now - last[0] < self._every:
            self._state[key] = (last[0], last[1] + 1)
            return False
        unlogged = last[1] if last is not None else 0
        _log.warning("%s%s", message, f" ({unlogged} more like it not logged)" if unlogged else "")
        self._state[key] = (now, 0)
        return True


def _reply(outcome: Outcome, detail: str | None = None, images: tuple[Pushed, ...] = ()) -> Reply:
    body: dict[str, object] = {"outcome": outcome.value}
    if detail:
        body["detail"] = detail
    if images:
        body["images"] = [str(image) for image in images]
    return Reply(_STATUS[outcome], json.dumps(body).encode() + b"\n", _JSON)


class HookRoute:
    """``POST /hooks/<sender>``: a ``PostRoute`` that hands the images of a push to ``notify``."""

    def __init__(
        self,
        sender: Sender,
        token: str,
        notify: Callable[[tuple[Pushed, ...]], object],
        metrics: WebhookMetrics,
        *,
        refusals: RefusalLog | None = None,
        max_body: int = MAX_BODY,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        if not token:
            raise ValueError("a webhook needs a non-empty token")
        self.sender = sender
        self._token = token
        self._notify = notify
        self._metrics = metrics
        self._refusals = refusals or RefusalLog()
        self.max_body = max_body
        self.read_timeout = read_timeout

    @property
    def path(self) -> str:
        return HOOKS_PREFIX + self.sender.value

    def _count(self, outcome: Outcome) -> None:
        self._metrics.requests.labels(self.sender.value, outcome.value).inc()

    def _refused(self, head: RequestHead, outcome: Outcome, why: str, status: int | None = None) -> Reply:
        self._count(outcome)
        self._refusals.warn(
            (self.sender.value, outcome.value),
            f"webhook {self.sender}: refused a request from {head.remote or 'an unknown peer'} "
            f"({status or _STATUS[outcome]} {outcome}): {why}; nothing is rescanned",
        )
        if status is not None:
            return Reply(
                status, json.dumps({"outcome": outcome.value, "detail": why}).encode() + b"\n", _JSON
            )
        return _reply(outcome, why)

    def admit(self, head: RequestHead) -> Reply | None:
        if self.sender is Sender.GHCR:
            if not head.headers.get(SIGNATURE_HEADER):
                return self._refused(head, Outcome.UNAUTHORIZED, f"no {SIGNATURE_HEADER} header")
            return None  # the signature covers the body: checked once it is read
        if bearer_matches(head.headers, self._token):
            return None
        if self.sender in QUERY_TOKEN_SENDERS and query_token_matches(head.query, self._token):
            return None
        expected = "a valid Authorization: Bearer token"
        if self.sender in QUERY_TOKEN_SENDERS:
            expected += " or ?token= parameter"
        why = f"no {expected}" if "authorization" not in head.headers else f"{expected} is needed"
        return self._refused(head, Outcome.UNAUTHORIZED, why)

    def refuse(self, head: RequestHead, refusal: Refusal) -> Reply:
        why = {
            Refusal.TOO_LARGE: f"the body is larger than {self.max_body} bytes",
            Refusal.TOO_SLOW: f"the body took longer than {self.read_timeout:g}s to arrive",
            Refusal.BUSY: "too many webhook requests at once",
        }[refusal]
        return self._refused(head, _REFUSAL_OUTCOME[refusal], why, refusal_status(refusal))

    async def handle(self, head: RequestHead, body: bytes) -> Reply:
        if self.sender is Sender.GHCR and not signature_matches(head.headers, body, self._token):
            return self._refused(head, Outcome.UNAUTHORIZED, f"{SIGNATURE_HEADER} does not match the body")
        try:
            pushed = parse_notification(self.sender, body, event=head.headers.get(GITHUB_EVENT_HEADER))
        except PayloadError as error:
            return self._refused(head, Outcome.MALFORMED, str(error))
        if not pushed:
            self._count(Outcome.IGNORED)
            _log.debug("webhook %s: no pushed tag in the notification from %s", self.sender, head.remote)
            return _reply(Outcome.IGNORED)
        self._count(Outcome.ACCEPTED)
        self._metrics.pushed_images.labels(self.sender.value).inc(len(pushed))
        _log.info(
            "webhook %s: pushed %s; rescanning the releases that use %s",
            self.sender,
            ", ".join(str(image) for image in pushed),
            "it" if len(pushed) == 1 else "them",
        )
        self._notify(pushed)
        return _reply(Outcome.ACCEPTED, images=pushed)


def hook_routes(
    token: str,
    notify: Callable[[tuple[Pushed, ...]], object],
    metrics: WebhookMetrics,
    *,
    max_body: int = MAX_BODY,
    read_timeout: float = READ_TIMEOUT,
) -> dict[str, PostRoute]:
    """Every receiver by path, sharing one token and one refusal log."""
    refusals = RefusalLog()
    routes = [
        HookRoute(
            sender, token, notify, metrics, refusals=refusals, max_body=max_body, read_timeout=read_timeout
        )
        for sender in Sender
    ]
    return {route.path: route for route in routes}
