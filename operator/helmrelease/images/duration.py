"""Go-style durations (``1h``, ``90m``, ``1h30m``, ``2.5s``, ``300ms``), as Flux and Kubernetes users write them.

The grammar is Go's ``time.ParseDuration``: an optional sign, then one or more decimal numbers each with a
unit (``ns``, ``us``/``µs``/``μs``, ``ms``, ``s``, ``m``, ``h``); ``0`` alone needs no unit. No library on our
stack reads this syntax (``datetime`` has no parser, pydantic reads ISO 8601), so it is written here, small,
and held to Go's behaviour by property tests. Durations come from tenants' annotations: anything else is a
``DurationError`` that says what was expected, and a value past Go's limit (about 292 years) is refused, as
Go refuses it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

#: Nanoseconds per unit, Go's table.
_UNITS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NANOSECONDS: Final = 2**63 - 1
_MAX_TEXT: Final = 64
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """Text that is not a Go duration; the message quotes it and shows the expected form."""


def _error(text: str, why: str) -> DurationError:
    return DurationError(f"{text!r} is not a duration ({why}); write it like 1h, 30m, 1h30m or 90s")


def parse_duration(text: str) -> timedelta:
    """Read ``text`` as Go's ``time.ParseDuration`` does (to the microsecond ``timedelta`` holds)."""
    if len(text) > _MAX_TEXT:
        raise _error(text[:_MAX_TEXT] + "…", f"longer than {_MAX_TEXT} characters")
    body = text[1:] if text[:1] in "+-" else text
    negative = text[:1] == "-"
    if body == "0":
        return timedelta(0)
    if not body:
        raise _error(text, "empty")
    nanoseconds = Decimal(0)
    position = 0
    while position < len(body):
        match = _PART.match(body, position)
        if match is None:
            raise _error(text, f"expected a number and a unit ({', '.join(_UNITS)}) at {body[position:]!r}")
        number = match[1]
        if number in ("", "."):
            raise _error(text, f"no number before the unit {match[2]!r}")
        try:
            nanoseconds += Decimal(number) * _UNITS[match[2]]
        except InvalidOperation as error:  # pragma: no cover - the pattern admits only decimal digits
            raise _error(text, "unreadable number") from error
        if nanoseconds > _MAX_NANOSECONDS:
            raise _error(text, "longer than Go's limit of about 292 years")
        position = match.end()
    whole = int(nanoseconds)  # Go truncates fractions of a nanosecond
    micro = whole // 1_000
    return -timedelta(microseconds=micro) if negative else timedelta(microseconds=micro)


def format_duration(value: timedelta) -> str:
    """``1h30m0s`` style, as Go prints a duration (whole seconds and above; shorter ones as seconds)."""
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(int(total), 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = total - int(total)
    second_text = f"{seconds + fraction:g}" if fraction else str(seconds)
    if hours:
        return f"{sign}{hours}h{minutes}m{second_text}s"
    if minutes:
        return f"{sign}{minutes}m{second_text}s"
    return f"{sign}{second_text}s"
