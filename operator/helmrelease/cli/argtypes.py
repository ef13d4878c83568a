"""Value checks shared by flags and ``HELMRELEASE_*`` variables, so a bad value fails the same way from either.

Each takes the text a user wrote (or a value already of the right type, as a default is) and returns the
converted value, or raises ``InvalidValue`` with a sentence that completes "``--workers``: ...". They serve as
argparse ``type=`` functions and, through ``Annotated``, as the validators of the pydantic settings models.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import durationpy
from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from helmrelease.api import sharding

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

T = TypeVar("T")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?")


class InvalidValue(argparse.ArgumentTypeError, ValueError):
    """A value a setting cannot take: argparse prints an ``ArgumentTypeError``'s text as it is, and pydantic
    turns a ``ValueError`` raised in a validator into a validation error that keeps it."""


def positive_int(value: str | int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0 or isinstance(value, bool):
        raise InvalidValue(f"must be a positive integer, not {value!r}")
    return number


def integer(value: str | int) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidValue(f"must be an integer, not {value!r}") from None


def port(value: str | int) -> int:
    """A TCP port; 0 turns the endpoint off."""
    text = str(value).strip()
    number = int(text) if text.isdigit() and not isinstance(value, bool) else -1
    if not 0 <= number <= 65535:
        raise InvalidValue(f"must be a TCP port, 0 to 65535 (0 turns the endpoint off), not {value!r}")
    return number


def _positive_float(value: str | float, unit: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise InvalidValue(f"must be a positive number{unit}, not {value!r}")
    return number


def positive_seconds(value: str | float) -> float:
    return _positive_float(value, " of seconds")


def positive_number(value: str | float) -> float:
    return _positive_float(value, "")


def duration(value: str | float) -> float:
    """Seconds from a Go duration as kubectl and flux take it (``5m``, ``1h30m``, ``90s``, ``1.5h``); a bare number
    is seconds. Positive and finite, like every timeout here."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return positive_seconds(value)
    text = str(value).strip()
    try:
        seconds = float(text) if _NUMBER.fullmatch(text) else durationpy.from_str(text).total_seconds()
    except (durationpy.DurationError, ValueError, OverflowError):
        raise InvalidValue(f"must be a duration such as 30s, 5m or 1h30m, not {value!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidValue(f"must be a positive duration such as 30s, 5m or 1h30m, not {value!r}")
    return seconds


def boolean(value: str | bool) -> bool:
    """true/false, 1/0 or yes/no in any case: what people write in a Deployment's ``env``."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise InvalidValue(f"must be true or false (or 1/0, yes/no), not {value!r}")


def log_level(value: str) -> str:
    """A level `logging` knows (DEBUG, INFO, WARNING, ERROR, CRITICAL), any case."""
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise InvalidValue(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return level


def one_of(*choices: str) -> Callable[[str], str]:
    """A check that admits exactly these words."""

    def check(value: str) -> str:
        if value not in choices:
            raise InvalidValue(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def text(value: str) -> str:
    """Any text but the empty one: a flag given as ``--helm=`` is a mistake, not a request for the default."""
    if not value.strip():
        raise InvalidValue(f"must not be empty, not {value!r}")
    return value.strip()


def http_url(value: str) -> str:
    """An ``http://`` URL with a valid port if any (``http://0.0.0.0:8080/healthz``), as kopf's probe serves."""
    parts = urlsplit(value.strip())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme != "http" or not parts.netloc or not port_ok:
        raise InvalidValue(f"must be an http:// URL such as http://0.0.0.0:8080/healthz, not {value!r}")
    return value.strip()


def path(value: str | Path) -> Path:
    return Path(text(str(value)))


def word_list(value: str | Iterable[str]) -> tuple[str, ...]:
    """Comma-separated text (a variable) or the values of a repeated flag, stripped and deduplicated. An empty
    item is refused: ``--namespace=`` meaning "every namespace" would widen what a typo reaches."""
    given = [value] if isinstance(value, str) else list(value)
    items = [item.strip() for entry in given for item in entry.split(",")]
    if "" in items:
        raise InvalidValue(f"must be a comma-separated list without empty items, not {value!r}")
    return tuple(dict.fromkeys(items))


def subset_of(*choices: str) -> Callable[[str | Iterable[str]], tuple[str, ...]]:
    """A ``word_list`` of at least one of these words."""

    def check(value: str | Iterable[str]) -> tuple[str, ...]:
        words = word_list(value)
        if not words or not set(words) <= set(choices):
            raise InvalidValue(f"must be a comma-separated list of {', '.join(choices)}, not {value!r}")
        return words

    return check


def shard(value: str) -> str:
    """A shard name (``sharding.shard_name``): an RFC 1123 label, since it is a label value and part of names."""
    try:
        return sharding.shard_name(value)
    except ValueError as error:
        raise InvalidValue(str(error)) from None


def optional(check: Callable[[str], T]) -> Callable[[str | None], T | None]:
    """``check``, letting ``None`` (a flag that switches the setting off, as ``--standalone`` does) through."""

    def check_or_none(value: str | None) -> T | None:
        return None if value is None else check(value)

    return check_or_none


# The same checks as pydantic field types.
PositiveInt = Annotated[int, BeforeValidator(positive_int)]
Integer = Annotated[int, BeforeValidator(integer)]
Port = Annotated[int, BeforeValidator(port)]
PositiveSeconds = Annotated[float, BeforeValidator(positive_seconds)]
Duration = Annotated[float, BeforeValidator(duration)]
Boolean = Annotated[bool, BeforeValidator(boolean)]
LogLevel = Annotated[str, BeforeValidator(log_level)]
Text = Annotated[str, BeforeValidator(text)]
FilePath = Annotated[Path, BeforeValidator(path)]
OptionalText = Annotated[str | None, BeforeValidator(optional(text))]
#: A list: comma-separated in a variable (not JSON, pydantic-settings' default for sequences), repeated as a flag.
Words = Annotated[tuple[str, ...], NoDecode, BeforeValidator(word_list)]
OptionalHttpUrl = Annotated[str | None, BeforeValidator(optional(http_url))]
OptionalShard = Annotated[str | None, BeforeValidator(optional(shard))]
OptionalPath = Annotated[Path | None, BeforeValidator(optional(path))]
