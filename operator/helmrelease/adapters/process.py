"""Running helm and git, and handing them secrets: one way to do it for every adapter.

A child runs from an argument vector (never a shell) with an environment we build from an allow-list, in its own
process group, so that stopping it also stops whatever it started (plugins, ssh, askpass, credential helpers).
Secrets reach children through files only we can read, written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# What a child may need from our environment, and nothing else: never HELM_*, KUBECONFIG, GIT_* settings or
# credentials that happen to be in the pod's environment. Adapters override what they set themselves (helm
# its HOME-like directories and TMPDIR, git HOME and the locale).
INHERITED_VARIABLES = (
    "PATH",  # finding programs: helm plugins, ssh, git's helpers
    "HOME",
    "LANG",
    "TMPDIR",
    "KUBERNETES_SERVICE_HOST",  # helm's in-cluster config when there is no kubeconfig
    "KUBERNETES_SERVICE_PORT",
    "HTTP_PROXY",  # proxies, in both spellings; ALL_PROXY is read by git (curl)
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",  # CA bundles
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
)


def inherited_environment(source: Mapping[str, str]) -> dict[str, str]:
    """The variables of `INHERITED_VARIABLES` that `source` has: the base of every child's environment."""
    return {name: source[name] for name in INHERITED_VARIABLES if name in source}


@dataclass(frozen=True)
class ProcessResult:
    """A finished child; whether a non-zero exit is a failure is the caller's call."""

    returncode: int
    stdout: bytes
    stderr: bytes


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop_process_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group (helm then records its failure), SIGKILL it after `grace`; with no grace, SIGKILL only.

    SIGKILL is sent even when we are cancelled again while waiting, so no process outlives the call.
    """
    try:
        if grace > 0:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
    finally:
        _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdin: bytes | None = None,
    deadline: float | None = None,
    grace: float = 0.0,
) -> ProcessResult:
    """Run `argv` to completion in its own session, with exactly `env`; stop its whole group if interrupted.

    Raises `TimeoutError` after `deadline` seconds (None: no deadline of our own) and re-raises cancellation,
    both only once the process group is gone; `FileNotFoundError` when the program or `cwd` is missing.
    """
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    )
    try:
        process = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled while the child starts: it may run already, and asyncio alone would SIGKILL only the group
        # leader (helm could not record its failure, its children would live on). Stop it like any other run.
        await asyncio.wait([spawning])
        if not spawning.cancelled() and spawning.exception() is None:
            await _stop_process_group(spawning.result(), grace)
        raise
    try:
        async with asyncio.timeout(deadline):
            stdout, stderr = await process.communicate(stdin)
    except BaseException:
        await _stop_process_group(process, grace)
        raise
    return ProcessResult(await process.wait(), stdout, stderr)


def write_private_file(path: Path, content: bytes, mode: int) -> None:
    """Write `content` so that no other user can ever read it, even for a moment."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    path.chmod(mode)


@contextlib.contextmanager
def private_directory(parent: Path) -> Iterator[Path]:
    """A directory only we can list (0700), removed with its contents afterwards: for secret files."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="helmrelease-", dir=parent) as directory:
        yield Path(directory)
