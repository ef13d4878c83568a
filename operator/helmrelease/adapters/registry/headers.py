"""Parsers for the HTTP headers the Distribution protocol leans on. Pure: they never raise on bad input.

A header a registry gets wrong degrades to "absent" (no challenge, no next page, no Retry-After) and the
caller decides what that means, so one odd registry cannot crash a scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SCHEME = re.compile(rf"[\s,]*({_TCHAR})")
_AUTH_PARAM = re.compile(rf"[\s,]*({_TCHAR})\s*=\s*({_QUOTED}|[^\s,\"]*)")
_ESCAPE = re.compile(r"\\(.)")
_LINK = re.compile(r"<([^>]*)>([^<]*)")
_REL = re.compile(r"""(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)
_DELAY_SECONDS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: lower-cased scheme and parameter names, unquoted values."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _ESCAPE.sub(r"\1", value[1:-1])
    return value


def parse_www_authenticate(values: Iterable[str]) -> tuple[Challenge, ...]:
    """Every challenge in every ``WWW-Authenticate`` header value (RFC 9110 §11.6.1 syntax)."""
    challenges: list[Challenge] = []
    for value in values:
        position = 0
        while (scheme := _SCHEME.match(value, position)) is not None:
            position = scheme.end()
            params: dict[str, str] = {}
            while (param := _AUTH_PARAM.match(value, position)) is not None:
                params.setdefault(param.group(1).lower(), _unquote(param.group(2)))
                position = param.end()
            challenges.append(Challenge(scheme.group(1).lower(), MappingProxyType(params)))
    return tuple(challenges)


def preferred_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """Bearer when offered (it carries scopes), else Basic; other schemes are not ours to answer."""
    by_scheme = {challenge.scheme: challenge for challenge in reversed(tuple(challenges))}
    bearer = by_scheme.get("bearer")
    if bearer is not None and bearer.realm:
        return bearer
    return by_scheme.get("basic")


def parse_next_link(value: str | None) -> str | None:
    """The target of the first ``rel="next"`` link of a ``Link`` header (RFC 8288), as written."""
    if not value:
        return None
    for link in _LINK.finditer(value):
        for rel in _REL.finditer(link.group(2)):
            relations = (rel.group(1) if rel.group(1) is not None else rel.group(2)).lower().split()
            if "next" in relations:
                return link.group(1).strip()
    return None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait per ``Retry-After`` (delay-seconds or HTTP-date), never negative; None if absent."""
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RateBudget:
    """Requests the registry says remain, and for how many seconds (None: it did not say)."""

    remaining: int
    seconds: float | None


_BUDGET_ITEM = re.compile(r"\s*([0-9]+)\s*((?:;[^,]*)?)")
_WINDOW = re.compile(r";\s*w\s*=\s*([0-9]+)", re.IGNORECASE)
_MAX_BUDGET_SECONDS = 7 * 24 * 3600.0  # a reset further away is not a delay (an epoch, or nonsense)


def parse_rate_budget(remaining: str | None, reset: str | None) -> RateBudget | None:
    """``RateLimit-Remaining`` (``76`` or Docker Hub's ``76;w=21600``) with ``RateLimit-Reset`` (delay
    seconds until the budget is renewed) or else the window ``w``; None when there is no usable remaining.
    With several comma-separated budgets the smallest remaining one counts."""
    if not remaining:
        return None
    items = [match for item in remaining.split(",") if (match := _BUDGET_ITEM.fullmatch(item))]
    if not items:
        return None
    lowest = min(items, key=lambda match: int(match.group(1)))
    seconds: float | None = None
    if reset is not None and _DELAY_SECONDS.fullmatch(reset.strip()):
        seconds = float(reset.strip())
    elif (window := _WINDOW.search(lowest.group(2))) is not None:
        seconds = float(window.group(1))
    if seconds is not None and seconds > _MAX_BUDGET_SECONDS:
        seconds = None
    return RateBudget(int(lowest.group(1)), seconds)
