"""The token bucket and host pauses of the registry adapter, tested without network."""

from __future__ import annotations

import asyncio

import pytest

from helmrelease.adapters.registry.limits import HostLimiter, LimitTooLong, TokenBucket


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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_announced_budget_is_spread_over_the_time_left() -> None:
    clock = Clock()
    limiter = HostLimiter(concurrency=4, rate=1000, burst=1000, clock=clock)
    limiter.observe_budget("manifest", 4, 20.0, spent=False)
    taken = []
    for _ in range(4):
        while (wait := limiter.budget_wait("manifest")[0]) > 0:
            clock.now += wait
        taken.append(clock.now - 100.0)
    assert taken == pytest.approx([0.0, 5.0, 10.0, 15.0])
    assert limiter.budget_wait("tags")[0] == 0.0  # other kinds are not held


def test_a_spent_budget_blocks_until_its_reset_then_lapses() -> None:
    clock = Clock()
    limiter = HostLimiter(concurrency=4, rate=1000, burst=1000, clock=clock)
    limiter.observe_budget("manifest", 0, 30.0, spent=False)
    delay, reason = limiter.budget_wait("manifest")
    assert delay == pytest.approx(30.0)
    assert "budget is spent" in reason
    clock.now += 31
    assert limiter.budget_wait("manifest")[0] == 0.0


def test_a_budget_without_a_horizon_holds_for_a_minute() -> None:
    clock = Clock()
    limiter = HostLimiter(concurrency=4, rate=1000, burst=1000, clock=clock)
    limiter.observe_budget("manifest", 0, None, spent=False)
    assert limiter.budget_wait("manifest")[0] == pytest.approx(60.0)


async def test_requests_in_flight_are_taken_off_the_budget() -> None:
    clock = Clock()
    limiter = HostLimiter(concurrency=8, rate=1000, burst=1000, clock=clock)
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def in_flight() -> None:
        async with limiter.slot("manifest"):
            entered.set()
            await leave.wait()

    tasks = [asyncio.create_task(in_flight()) for _ in range(3)]
    await entered.wait()
    await asyncio.sleep(0)
    async with limiter.slot("manifest"):
        # this answer says 3 remain, but the three others still in flight will spend them
        limiter.observe_budget("manifest", 3, 10.0, spent=True)
    assert limiter.budget_wait("manifest")[0] == pytest.approx(10.0)
    leave.set()
    await asyncio.gather(*tasks)


async def test_a_wait_longer_than_accepted_raises_instead() -> None:
    limiter = HostLimiter(concurrency=1, rate=1000, burst=1000)
    limiter.pause(120)
    with pytest.raises(LimitTooLong, match="Retry-After"):
        async with limiter.slot(max_wait=60):
            pass


def test_a_late_answer_to_an_earlier_request_does_not_replace_a_newer_budget() -> None:
    clock = Clock()
    limiter = HostLimiter(concurrency=4, rate=1000, burst=1000, clock=clock)
    limiter.observe_budget("manifest", 0, 10.0, spent=False, sent_at=100.5)  # the newer request: spent
    limiter.observe_budget("manifest", 3, 10.0, spent=False, sent_at=100.2)  # an older one, answered later
    assert limiter.budget_wait("manifest")[0] == pytest.approx(10.0)


async def test_an_answer_overtaken_by_another_request_does_not_hand_out_that_requests_place_again() -> None:
    """A is sent, then B; the registry counts B first (3 left), then A (2 left), and A's answer comes first.
    B's answer, to the newer request, must not count A's place as free again: 2 may go, not 3."""
    clock = Clock()
    limiter = HostLimiter(concurrency=8, rate=1000, burst=1000, clock=clock)
    b_sent = asyncio.Event()
    a_answered = asyncio.Event()

    async def request_a() -> None:
        async with limiter.slot("manifest") as sent:
            await b_sent.wait()
            clock.now += 0.1
            limiter.observe_budget("manifest", 2, 10.0, spent=True, sent_at=sent)
        a_answered.set()

    a = asyncio.create_task(request_a())
    await asyncio.sleep(0)
    clock.now += 0.01
    async with limiter.slot("manifest") as sent:
        b_sent.set()
        await a_answered.wait()
        clock.now += 0.1
        limiter.observe_budget("manifest", 3, 10.0, spent=True, sent_at=sent)
    await a
    until, granted = clock.now + 10.0, 0
    while clock.now < until - 0.01:  # every place the budget gives before it lapses
        wait, _ = limiter.budget_wait("manifest")
        granted += wait == 0.0
        clock.now += max(wait, 0.001)
    assert granted == 2
