"""Go durations: named rows from Go's own ``time.ParseDuration`` tests, and properties over generated ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.images.duration import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0", timedelta(0), id="zero-needs-no-unit"),
        pytest.param("1h", timedelta(hours=1), id="hour"),
        pytest.param("90m", timedelta(minutes=90), id="minutes-past-an-hour"),
        pytest.param("1h30m", timedelta(hours=1, minutes=30), id="compound"),
        pytest.param("3s", timedelta(seconds=3), id="seconds"),
        pytest.param("1.5h", timedelta(minutes=90), id="fraction"),
        pytest.param(".5s", timedelta(milliseconds=500), id="leading-dot"),
        pytest.param("5.s", timedelta(seconds=5), id="trailing-dot"),
        pytest.param("300ms", timedelta(milliseconds=300), id="milliseconds"),
        pytest.param("10us", timedelta(microseconds=10), id="microseconds"),
        pytest.param("10µs", timedelta(microseconds=10), id="micro-sign"),
        pytest.param("10μs", timedelta(microseconds=10), id="greek-mu"),
        pytest.param("1500ns", timedelta(microseconds=1), id="nanoseconds-truncate"),
        pytest.param("+5m", timedelta(minutes=5), id="plus"),
        pytest.param("-5m", -timedelta(minutes=5), id="minus"),
        pytest.param("1h1h", timedelta(hours=2), id="repeated-unit-adds-as-in-go"),
        pytest.param("2562047h", timedelta(hours=2562047), id="near-go-limit"),
    ],
)
def test_go_durations_read_as_go_reads_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("1", id="no-unit"),
        pytest.param("1d", id="days-are-not-go"),
        pytest.param("h", id="no-number"),
        pytest.param(".h", id="dot-only"),
        pytest.param("1 h", id="space"),
        pytest.param("1h-5m", id="sign-inside"),
        pytest.param("1H", id="capital-unit"),
        pytest.param("3000000h", id="past-go-limit"),
        pytest.param("1" * 100 + "s", id="long"),
        pytest.param("--1s", id="two-signs"),
    ],
)
def test_anything_else_is_an_error_that_shows_the_form(text: str) -> None:
    with pytest.raises(DurationError, match="write it like 1h, 30m"):
        parse_duration(text)


_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(_UNIT_SECONDS))), min_size=1, max_size=5
    )
)
def test_a_sum_of_whole_parts_is_their_sum(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in parts)
    assert parse_duration(text) == timedelta(seconds=sum(n * _UNIT_SECONDS[u] for n, u in parts))


@given(st.integers(0, 10**9))
def test_formatting_reads_back(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=20))
def test_no_text_crashes_the_parser(text: str) -> None:
    try:
        value = parse_duration(text)
    except DurationError:
        return
    assert isinstance(value, timedelta)
