"""The one exponential backoff of the adapters: doubling from ``base``, capped, scaled by a jitter."""

from __future__ import annotations

import pytest

from helmrelease.adapters.backoff import backoff_delay


@pytest.mark.parametrize(
    ("retry", "jitter", "expected"),
    [
        pytest.param(0, 1.0, 0.5, id="first-retry-full"),
        pytest.param(0, 0.5, 0.25, id="first-retry-half"),
        pytest.param(3, 1.0, 4.0, id="doubles"),
        pytest.param(10, 1.0, 20.0, id="capped"),
        pytest.param(10_000, 1.0, 20.0, id="huge-attempt-does-not-overflow"),
        pytest.param(5, 0.0, 0.0, id="zero-jitter"),
    ],
)
def test_backoff_delay(retry: int, jitter: float, expected: float) -> None:
    assert backoff_delay(retry, base=0.5, cap=20.0, jitter=jitter) == expected


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        pytest.param(0, 0.5, id="first-retry"),
        pytest.param(1, 1.0, id="doubles"),
        pytest.param(5, 8.0, id="capped"),
    ],
)
def test_backoff_delay_without_jitter_waits_the_whole_delay(retry: int, expected: float) -> None:
    """Git write-back's retries (formerly their own function, counting attempts from 1)."""
    assert backoff_delay(retry, base=0.5, cap=8.0) == expected
