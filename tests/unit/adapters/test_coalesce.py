"""The one coalescer of the adapters: one task per key, shared by concurrent (and, unless in flight only, later)
callers."""

from __future__ import annotations

import asyncio

import pytest

from helmrelease.adapters.coalesce import TaskMemo


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


@pytest.mark.parametrize("fails", [pytest.param(False, id="success"), pytest.param(True, id="failure")])
async def test_in_flight_only_shares_concurrent_callers_and_forgets_when_done(fails: bool) -> None:
    """The chart fetcher's use: concurrent fetches share one download; the next fetch runs again."""
    memo: TaskMemo[str, str] = TaskMemo(in_flight_only=True)
    release = asyncio.Event()
    calls = 0

    async def download() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        if fails:
            raise RuntimeError("unreachable")
        return "chart"

    waiting = [asyncio.create_task(memo.run("k", download)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert ("k" in memo, calls) == (True, 1)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [str(result) for result in results] == ["unreachable" if fails else "chart"] * 3
    assert "k" not in memo
    again = await asyncio.gather(memo.run("k", download), return_exceptions=True)
    assert [str(result) for result in again] == ["unreachable" if fails else "chart"]
    assert calls == 2


async def test_a_failure_no_caller_waited_for_is_not_reported_as_unretrieved() -> None:
    """Every caller may be cancelled before the shared task fails: its exception is still retrieved."""
    memo: TaskMemo[str, str] = TaskMemo(in_flight_only=True)
    release = asyncio.Event()

    async def failing() -> str:
        await release.wait()
        raise RuntimeError("down")

    caller = asyncio.create_task(memo.run("k", failing))
    await asyncio.sleep(0.01)
    shared = memo.peek("k")
    assert shared is not None
    caller.cancel()
    release.set()
    await asyncio.wait([shared])
    await asyncio.sleep(0)  # the done callbacks
    assert "k" not in memo
    assert shared._log_traceback is False  # asyncio's own flag: set until someone reads the exception
