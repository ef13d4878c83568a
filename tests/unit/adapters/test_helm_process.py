"""run_process: no shell, explicit environment, deadlines and cancellation that leave no process behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from helmrelease.adapters import helm

SH = shutil.which("sh") or "/bin/sh"
ENV = {"PATH": os.environ["PATH"]}


def live_members(pgid: int) -> list[int]:
    """Running processes of a process group, from /proc (zombies are dead: they only wait for a reaper)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rpartition(")")[2].split()
        except OSError:  # exited while we looked
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(stat_file.parent.name))
    return members


async def group_gone(pgid: int) -> bool:
    """Whether no process of the group is running within a second (SIGKILL takes effect asynchronously)."""
    for _ in range(50):
        if not live_members(pgid):
            return True
        await asyncio.sleep(0.02)
    return False


def read_pid(pid_file: Path) -> int | None:
    text = pid_file.read_text() if pid_file.exists() else ""
    return int(text) if text.strip() else None


async def wait_for_pid(pid_file: Path) -> int:
    for _ in range(200):
        if (pid := read_pid(pid_file)) is not None:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError("the child never wrote its pid")


async def test_arguments_never_pass_through_a_shell() -> None:
    result = await helm.run_process(
        ["printf", "%s|", "$(id)", "a b", ";true"], env=ENV, deadline=10, grace=1, operation="printf"
    )
    assert (result.returncode, result.stdout) == (0, b"$(id)|a b|;true|")


async def test_the_environment_is_exactly_the_one_given() -> None:
    result = await helm.run_process(
        ["env"], env={**ENV, "ONLY": "this"}, deadline=10, grace=1, operation="env"
    )
    assert sorted(result.stdout.decode().splitlines()) == sorted([f"PATH={ENV['PATH']}", "ONLY=this"])


async def test_failure_is_returned_not_raised() -> None:
    result = await helm.run_process(
        [SH, "-c", "echo out; echo err >&2; exit 3"], env=ENV, deadline=10, grace=1, operation="sh"
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")


async def test_deadline_stops_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; sleep 60 & sleep 60"
    with pytest.raises(helm.Timeout, match="did not finish within 1s"):
        await helm.run_process([SH, "-c", script], env=ENV, deadline=1, grace=1, operation="upgrade")
    assert await group_gone(await wait_for_pid(pid_file))


async def test_cancellation_terminates_the_group_gracefully(tmp_path: Path) -> None:
    """SIGTERM first: helm records a cancelled upgrade as failed instead of leaving it pending."""
    pid_file, got_term = tmp_path / "pid", tmp_path / "term"
    script = f"trap 'touch {got_term}; exit 143' TERM; echo $$ > {pid_file}; while :; do sleep 0.1; done"
    task = asyncio.create_task(
        helm.run_process([SH, "-c", script], env=ENV, deadline=60, grace=10, operation="x")
    )
    pgid = await wait_for_pid(pid_file)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5  # it went on SIGTERM, long before the grace period ended
    assert got_term.exists()
    assert await group_gone(pgid)


@pytest.mark.parametrize("turns", [1, 2, 3])
async def test_cancellation_while_the_child_starts_still_stops_its_group(tmp_path: Path, turns: int) -> None:
    """Cancelled inside the spawn (the child exists, the coroutine has no process object yet): asyncio alone would
    SIGKILL the leader only, leaving what it started running. The group is stopped like any interrupted run."""
    pid_file = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pid_file}; sleep 60 & sleep 60"
    task = asyncio.create_task(
        helm.run_process([SH, "-c", script], env=ENV, deadline=60, grace=0.5, operation="x")
    )
    for _ in range(turns):  # into create_subprocess_exec, after the fork, before it returns
        await asyncio.sleep(0)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Without the fix the call returned only when the orphaned `sleep 60` closed the output pipes, a minute later.
    assert time.monotonic() - started < 5
    if (pgid := read_pid(pid_file)) is not None:
        assert await group_gone(pgid)
    await asyncio.sleep(0.3)  # a shell that had not written its pid yet may do so now, if it still ran
    if (pgid := read_pid(pid_file)) is not None:
        assert await group_gone(pgid)


async def test_cancellation_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pid_file}; sleep 60 & sleep 60"
    task = asyncio.create_task(
        helm.run_process([SH, "-c", script], env=ENV, deadline=60, grace=0.5, operation="x")
    )
    pgid = await wait_for_pid(pid_file)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.5 <= time.monotonic() - started < 5
    assert await group_gone(pgid)


async def test_a_second_cancellation_during_the_grace_period_still_kills(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pid_file}; sleep 60"
    task = asyncio.create_task(
        helm.run_process([SH, "-c", script], env=ENV, deadline=60, grace=30, operation="x")
    )
    pgid = await wait_for_pid(pid_file)
    task.cancel()
    await asyncio.sleep(0.2)  # now inside the grace period
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await group_gone(pgid)
