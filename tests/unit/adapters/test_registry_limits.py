"""The token bucket and host pauses of the registry adapter, tested without network."""

from __future__ import annotations

import asyncio

import pytest

from helmrelease.adapters.registry.limits import HostLimiter, TokenBucket


@pytest.mark.parametrize(
    ("rate", "burst", "request_times", "expected_delays"),
    [
        pytest.param(1.0, 2, [0, 0, 0], [0.0, 0.0, 1.0], id="burst-then-wait"),
        pytest.param(1.0, 2, [0, 0, 0, 0], [0.0, 0.0, 1.0, 2.0], id="waiters-queue-up"),
        pytest.param(2.0, 1, [0, 0.5, 1.0], [0.0, 0.0, 0.0], id="steady-at-rate"),
        pytest.param(1.0, 2, [0, 0, 100, 100, 100], [0.0, 0.0, 0.0, 0.0, 1.0], id="refills-only-to-burst"),
    ],
)
def test_token_bucket(
    rate: float, burst: int, request_times: list[float], expected_delays: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, now=0.0)
    assert [bucket.reserve(now) for now in request_times] == pytest.approx(expected_delays)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_token_bucket_refuses_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate, burst, now=0.0)


async def test_host_limiter_caps_concurrency() -> None:
    limiter = HostLimiter(concurrency=2, rate=1000, burst=1000)
    running = peak = 0

    async def request() -> None:
        nonlocal running, peak
        async with limiter.slot():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(request() for _ in range(10)))
    assert peak == 2


async def test_host_limiter_pause_holds_later_requests() -> None:
    loop = asyncio.get_running_loop()
    limiter = HostLimiter(concurrency=4, rate=1000, burst=1000)
    limiter.pause(0.2)
    started = loop.time()
    async with limiter.slot():
        waited = loop.time() - started
    assert waited >= 0.19
