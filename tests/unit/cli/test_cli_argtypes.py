"""Flag values shared by `helmrelease run` and `helmrelease image-policy` fail at parse time, with one wording."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from helmrelease.cli.argtypes import log_level, positive_int, positive_seconds


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        pytest.param(positive_seconds, "300", 300.0, id="seconds"),
        pytest.param(positive_seconds, "0.5", 0.5, id="fraction"),
        pytest.param(positive_int, "4", 4, id="int"),
        pytest.param(log_level, "debug", "DEBUG", id="level-lower-case"),
        pytest.param(log_level, "WARNING", "WARNING", id="level"),
    ],
)
def test_accepts(parse: Callable[[str], Any], text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        pytest.param(positive_seconds, "0", id="zero-seconds"),
        pytest.param(positive_seconds, "-5", id="negative-seconds"),
        pytest.param(positive_int, "0", id="zero-workers"),
        pytest.param(log_level, "verbose", id="unknown-level"),
    ],
)
def test_refuses(parse: Callable[[str], Any], text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


@pytest.mark.parametrize("text", ["four", "1.5"])
def test_not_a_number_is_refused_by_argparse(text: str) -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        positive_int(text)
