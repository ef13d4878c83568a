"""Running git (`GitRunner`, the one runner of chart fetches and write-back): output capture, standard input,
failures raised as classified, and no process left behind on cancellation or timeout."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helmrelease.adapters import helm
from helmrelease.adapters.git import (
    GitError,
    GitRemote,
    GitRepository,
    GitRunner,
    GitTimeout,
    RemoteUnreachable,
    StateLayout,
    git_environment,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return git_environment(os.environ, StateLayout(tmp_path), None)


async def _eventually(condition: Callable[[], bool], seconds: float) -> None:
    """Wait until ``condition`` holds: it observes another process, so there is nothing to await but time."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - another process's state, no event to wait on
            await asyncio.sleep(0.02)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie awaiting its new parent's reaping counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


async def test_captures_output_and_exit_code(tmp_path: Path, env: dict[str, str]) -> None:
    git = GitRunner(env, tmp_path)
    output = await git.output("hash-object", "--stdin", input_text="hello\n")
    assert (output.returncode, output.stdout.strip()) == (0, "ce013625030ba8dba906f756967f9e9ca394464a")
    failed = await git.output("rev-parse", "HEAD")
    assert failed.returncode == 128
    assert "not a git repository" in failed.stderr


async def test_run_raises_the_classified_error_without_the_secrets(
    tmp_path: Path, env: dict[str, str]
) -> None:
    git = GitRunner(env, tmp_path, secrets=("s3cret",))
    with pytest.raises(RemoteUnreachable) as raised:
        await git.run("ls-remote", "--", "http://127.0.0.1:1/s3cret.git")
    assert str(raised.value).startswith(
        "git ls-remote failed: unable to access 'http://127.0.0.1:1/***.git/'"
    )
    assert isinstance(raised.value, helm.RepositoryUnreachable)
    assert raised.value.returncode == 128
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    "stop",
    [pytest.param("cancel", id="cancelled"), pytest.param("timeout", id="timed-out")],
)
async def test_stopping_kills_the_whole_process_group(tmp_path: Path, env: dict[str, str], stop: str) -> None:
    pid_file = tmp_path / "child.pid"
    # A git alias runs through sh as git's child: the kind of helper (ssh, askpass) that must not outlive git.
    args = ["-c", f"alias.hang=!echo $$ > '{pid_file}'; exec sleep 60", "hang"]
    task = asyncio.ensure_future(GitRunner(env, tmp_path).output(*args))
    await _eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "", seconds=10)
    child = int(pid_file.read_text())
    started = time.monotonic()
    if stop == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await task
    await _eventually(lambda: _gone(child), seconds=5)
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel completes them) and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def test_a_remote_that_never_answers_times_out(tmp_path: Path, silent_server: int) -> None:
    repository = GitRepository(GitRemote(f"git://127.0.0.1:{silent_server}/r.git"), tmp_path, timeout=1)
    started = time.monotonic()
    with pytest.raises(GitTimeout, match=r"git clone failed: no result within 1s") as raised:
        await repository.sync()
    assert time.monotonic() - started < 5
    assert isinstance(raised.value, helm.Timeout)


async def test_a_missing_git_is_a_git_error(tmp_path: Path) -> None:
    repository = GitRepository(GitRemote("file:///nowhere"), tmp_path, executable=str(tmp_path / "no-git"))
    with pytest.raises(GitError, match=r"git clone failed: cannot run .*no-git: No such file or directory"):
        await repository.sync()
