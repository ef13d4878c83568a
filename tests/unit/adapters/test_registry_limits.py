"""Backoff, the token bucket, host pauses and the task memo under the caches, tested without network."""

from __future__ import annotations

import asyncio

import pytest

from helmrelease.adapters.registry.limits import HostLimiter, TokenBucket, backoff_delay
from helmrelease.adapters.registry.memo import TaskMemo


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        pytest.param(0, 1.0, 0.5, id="first-retry-full"),
        pytest.param(0, 0.5, 0.25, id="first-retry-half"),
        pytest.param(3, 1.0, 4.0, id="doubles"),
        pytest.param(10, 1.0, 20.0, id="capped"),
        pytest.param(10_000, 1.0, 20.0, id="huge-attempt-does-not-overflow"),
        pytest.param(5, 0.0, 0.0, id="zero-jitter"),
    ],
)
def test_backoff_delay(attempt: int, jitter: float, expected: float) -> None:
    assert backoff_delay(attempt, base=0.5, cap=20.0, jitter=jitter) == expected


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


async def test_task_memo_coalesces_concurrent_callers() -> None:
    memo: TaskMemo[str, int] = TaskMemo()
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    results = await asyncio.gather(*(memo.run("k", fetch) for _ in range(50)))
    assert results == [42] * 50
    assert calls == 1
    assert await memo.run("k", fetch) == 42
    assert calls == 1


@pytest.mark.parametrize(
    ("forget_failures", "expected_calls"),
    [pytest.param(True, 2, id="forgets-failures"), pytest.param(False, 1, id="remembers-failures")],
)
async def test_task_memo_failures(forget_failures: bool, expected_calls: int) -> None:
    memo: TaskMemo[str, int] = TaskMemo(forget_failures=forget_failures)
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("registry down")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="registry down"):
            await memo.run("k", failing)
    assert calls == expected_calls


async def test_task_memo_is_a_bounded_lru() -> None:
    memo: TaskMemo[str, str] = TaskMemo(max_entries=2)

    async def value(key: str) -> str:
        return key.upper()

    for key in ("a", "b"):
        await memo.run(key, lambda key=key: value(key))
    await memo.run("a", lambda: value("a"))  # touch: b is now the oldest
    await memo.run("c", lambda: value("c"))
    assert ("a" in memo, "b" in memo, "c" in memo, len(memo)) == (True, False, True, 2)


async def test_cancelled_caller_does_not_cancel_the_shared_task() -> None:
    memo: TaskMemo[str, str] = TaskMemo()
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    impatient = asyncio.create_task(memo.run("k", slow))
    patient = asyncio.create_task(memo.run("k", slow))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == "done"
    with pytest.raises(asyncio.CancelledError):
        await impatient


def test_task_memo_refuses_zero_entries() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TaskMemo(max_entries=0)
