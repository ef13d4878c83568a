"""The value checks shared by flags and HELMRELEASE_* variables: what each admits, and one wording for what not."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import durationpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.cli.argtypes import (
    InvalidValue,
    boolean,
    duration,
    http_url,
    integer,
    log_level,
    one_of,
    optional,
    path,
    positive_int,
    positive_number,
    positive_seconds,
    subset_of,
    text,
    word_list,
)


@pytest.mark.parametrize(
    ("parse", "value", "expected"),
    [
        pytest.param(positive_seconds, "300", 300.0, id="seconds"),
        pytest.param(positive_seconds, "0.5", 0.5, id="fraction"),
        pytest.param(positive_seconds, 300.0, 300.0, id="seconds-already-a-number"),
        pytest.param(positive_number, "1e3", 1000.0, id="number-exponent"),
        pytest.param(positive_int, "4", 4, id="int"),
        pytest.param(positive_int, " 4 ", 4, id="int-with-spaces"),
        pytest.param(positive_int, 4, 4, id="int-already-an-int"),
        pytest.param(integer, "-100", -100, id="negative-integer"),
        pytest.param(integer, "0", 0, id="zero-integer"),
        pytest.param(log_level, "debug", "DEBUG", id="level-lower-case"),
        pytest.param(log_level, "WARNING", "WARNING", id="level"),
        pytest.param(one_of("text", "json"), "json", "json", id="choice"),
        pytest.param(text, " helm ", "helm", id="text-stripped"),
        pytest.param(path, "/var/lib/x", Path("/var/lib/x"), id="path"),
        pytest.param(http_url, "http://0.0.0.0:8080/healthz", "http://0.0.0.0:8080/healthz", id="url"),
        pytest.param(http_url, "http://localhost", "http://localhost", id="url-without-port"),
        pytest.param(optional(text), None, None, id="optional-none"),
        pytest.param(optional(text), "ops", "ops", id="optional-text"),
        pytest.param(word_list, "a, b,a", ("a", "b"), id="comma-separated-deduplicated"),
        pytest.param(word_list, ["a", "b,c"], ("a", "b", "c"), id="repeated-flag-values"),
        pytest.param(word_list, [], (), id="no-values"),
        pytest.param(subset_of("https", "ssh"), "ssh", ("ssh",), id="subset"),
    ],
)
def test_accepts(parse: Callable[[Any], Any], value: object, expected: object) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[
            pytest.param(word, True, id=f"true-{word}")
            for word in ("true", "TRUE", "True", "1", "yes", "Yes")
        ],
        *[pytest.param(word, False, id=f"false-{word}") for word in ("false", "FALSE", "0", "no", "No")],
        pytest.param(" true ", True, id="spaces"),
        pytest.param(True, True, id="already-a-bool"),
    ],
)
def test_boolean_accepts_the_usual_spellings(value: str | bool, expected: bool) -> None:
    assert boolean(value) is expected


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        pytest.param(
            positive_seconds, "0", "must be a positive number of seconds, not '0'", id="zero-seconds"
        ),
        pytest.param(positive_seconds, "-5", "must be a positive number of seconds, not '-5'", id="negative"),
        pytest.param(positive_seconds, "soon", "must be a positive number of seconds, not 'soon'", id="word"),
        pytest.param(
            positive_seconds, "inf", "must be a positive number of seconds, not 'inf'", id="infinite"
        ),
        pytest.param(positive_seconds, "nan", "must be a positive number of seconds, not 'nan'", id="nan"),
        pytest.param(positive_number, "0", "must be a positive number, not '0'", id="zero-number"),
        pytest.param(positive_int, "0", "must be a positive integer, not '0'", id="zero-workers"),
        pytest.param(positive_int, "abc", "must be a positive integer, not 'abc'", id="not-a-number"),
        pytest.param(positive_int, "1.5", "must be a positive integer, not '1.5'", id="fraction"),
        pytest.param(positive_int, "", "must be a positive integer, not ''", id="empty-int"),
        pytest.param(integer, "high", "must be an integer, not 'high'", id="not-an-integer"),
        pytest.param(
            log_level,
            "verbose",
            "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'verbose'",
            id="unknown-level",
        ),
        pytest.param(one_of("text", "json"), "xml", "must be one of text, json, not 'xml'", id="choice"),
        pytest.param(boolean, "maybe", "must be true or false (or 1/0, yes/no), not 'maybe'", id="boolean"),
        pytest.param(boolean, "on", "must be true or false (or 1/0, yes/no), not 'on'", id="boolean-on"),
        pytest.param(text, " ", "must not be empty, not ' '", id="blank-text"),
        pytest.param(path, "", "must not be empty, not ''", id="empty-path"),
        *[
            pytest.param(
                http_url,
                url,
                f"must be an http:// URL such as http://0.0.0.0:8080/healthz, not {url!r}",
                id=f"url-{name}",
            )
            for name, url in [
                ("https", "https://h/healthz"),
                ("no-host", "healthz"),
                ("bad-port", "http://h:x/"),
            ]
        ],
        pytest.param(
            word_list,
            "a,,b",
            "must be a comma-separated list without empty items, not 'a,,b'",
            id="empty-item",
        ),
        pytest.param(
            word_list, [""], "must be a comma-separated list without empty items, not ['']", id="empty-flag"
        ),
        pytest.param(
            subset_of("https", "ssh"),
            "https,ext",
            "must be a comma-separated list of https, ssh, not 'https,ext'",
            id="not-in-subset",
        ),
    ],
)
def test_refuses_with_one_wording(parse: Callable[[Any], Any], value: object, message: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        parse(value)
    assert str(raised.value) == message


def test_a_refusal_is_what_argparse_prints_and_what_pydantic_keeps() -> None:
    """argparse prints an ArgumentTypeError's own text (a bare ValueError becomes "invalid ... value"); pydantic
    keeps a ValueError raised in a validator."""
    assert issubclass(InvalidValue, argparse.ArgumentTypeError)
    assert issubclass(InvalidValue, ValueError)
    parser = argparse.ArgumentParser(prog="p", exit_on_error=False)
    parser.add_argument("--workers", type=positive_int)
    with pytest.raises(
        argparse.ArgumentError, match=r"^argument --workers: must be a positive integer, not '0'$"
    ):
        parser.parse_args(["--workers", "0"])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="hours-and-minutes"),
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("45", 45.0, id="bare-number-is-seconds"),
        pytest.param(" 2m ", 120.0, id="spaces"),
        pytest.param(300.0, 300.0, id="default-already-seconds"),
    ],
)
def test_duration_reads_go_durations(value: str | float, seconds: float) -> None:
    assert duration(value) == seconds


@pytest.mark.parametrize("value", ["0s", "-5m", "5x", "m", "", "five minutes", "0", True])
def test_duration_refuses_what_is_no_positive_duration(value: str) -> None:
    with pytest.raises(InvalidValue, match="duration such as 30s, 5m or 1h30m"):
        duration(value)


@given(st.integers(min_value=1, max_value=10**6))
def test_duration_round_trips_go_formatting(seconds: int) -> None:
    assert duration(durationpy.to_str(dt.timedelta(seconds=seconds))) == seconds
