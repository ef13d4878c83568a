"""The shared child runner: what only `process.run` does beyond what the helm and git runner tests cover."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from helmrelease.adapters import process

SH = shutil.which("sh") or "/bin/sh"
ENV = {"PATH": os.environ["PATH"]}


def exists(path: Path) -> bool:
    return path.exists()


async def test_standard_input_reaches_the_child() -> None:
    result = await process.run(["cat"], env=ENV, stdin=b"values\n", deadline=10)
    assert (result.returncode, result.stdout) == (0, b"values\n")


async def test_without_standard_input_the_child_reads_end_of_file() -> None:
    result = await process.run(["cat"], env=ENV, deadline=10)
    assert (result.returncode, result.stdout) == (0, b"")


@pytest.mark.parametrize(
    ("grace", "terminated"),
    [
        pytest.param(0.0, False, id="no-grace-kills-at-once"),
        pytest.param(5.0, True, id="grace-terminates-first"),
    ],
)
async def test_a_deadline_raises_timeout_once_the_child_is_stopped(
    tmp_path: Path, grace: float, terminated: bool
) -> None:
    got_term = tmp_path / "term"
    script = f"trap 'touch {got_term}; exit 143' TERM; while :; do sleep 0.05; done"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await process.run([SH, "-c", script], env=ENV, deadline=0.5, grace=grace)
    assert time.monotonic() - started < 4
    assert got_term.exists() is terminated


async def test_cancellation_without_a_deadline_stops_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(process.run([SH, "-c", f"echo $$ > {pid_file}; exec sleep 60"], env=ENV))
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text().strip():  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not exists(Path(f"/proc/{pid_file.read_text().strip()}"))  # killed, and reaped by us


@pytest.mark.parametrize(
    ("name", "inherited"),
    [
        pytest.param("PATH", True, id="path"),
        pytest.param("HTTPS_PROXY", True, id="proxy"),
        pytest.param("all_proxy", True, id="git-proxy"),
        pytest.param("GIT_SSL_CAINFO", True, id="git-ca-bundle"),
        pytest.param("KUBERNETES_SERVICE_HOST", True, id="in-cluster-address"),
        pytest.param("KUBECONFIG", False, id="kubeconfig"),
        pytest.param("HELM_DRIVER", False, id="helm-setting"),
        pytest.param("GIT_DIR", False, id="git-setting"),
        pytest.param("AWS_SECRET_ACCESS_KEY", False, id="credential"),
    ],
)
def test_only_allowed_variables_are_inherited(name: str, inherited: bool) -> None:
    assert (name in process.inherited_environment({name: "value"})) is inherited
