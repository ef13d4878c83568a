"""SIGKILL of the image-policy sidecar mid-cycle and mid-git-push, then a restart: nothing lost, nothing twice.

The sidecar's git commands go through `tests/support/helm_wrapper.py` (a `git` first on its PATH), which holds one
of them before it starts or after it returned, so the kill lands where it is named. The remote is served by `git
daemon` on loopback, a process of its own, as a real git server is: killing the sidecar mid-push kills its `git
push`, not the server, whose pre-receive hook holds the push until the client is dead. "Mid-cycle" is a scan
stalled by a registry proxy that holds every request. After each restart: the tag moved once in the cluster and
once in git (commits counted on the remote), and every state file in --state-dir is whole.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.integration.test_git_writeback import Remote
from tests.integration.test_image_policy import (
    AUTOMATED,
    MANIFEST,
    Releases,
    app,
    releases,
    remote,
    seed,
)
from tests.integration.test_image_policy_cli import _environment, sidecar_args
from tests.support.helm_wrapper import AFTER, BEFORE, CommandWrapper
from tests.support.procs import Process, descendants, free_port
from tests.support.registry import Registry
from tests.support.registry_proxy import RegistryProxy
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["app", "releases", "remote"]  # fixtures shared with test_image_policy

TIMEOUT = 120
WRITEBACK = {
    **AUTOMATED,
    "fluxcd.io/tag.chart-image": "semver:~1.0",
    "image.helm.fluxcd.io/git-writeback": "true",
}
PRE_RECEIVE = """#!/bin/sh
# Holds one push (armed by the test) until the test removes the held mark: the client is mid-push meanwhile.
cat >/dev/null
if mv "{gates}/push.armed" "{gates}/push.held" 2>/dev/null; then
  while [ -e "{gates}/push.held" ]; do sleep 0.05; done
fi
exit 0
"""


@dataclass
class GitServer:
    """`git daemon` serving the bare repository of `remote` for pushes, with a pre-receive hook that can hold one."""

    remote: Remote
    process: Process
    url: str
    gates: Path

    def hold_next_push(self) -> None:
        (self.gates / "push.armed").touch()

    def push_held(self) -> bool:
        return (self.gates / "push.held").exists()

    def release_push(self) -> None:
        (self.gates / "push.held").unlink(missing_ok=True)

    def idle(self) -> bool:
        """No receive-pack (or hook) of the daemon runs: whatever push it served has ended, one way or the other."""
        assert self.process.popen is not None
        return not descendants(self.process.popen.pid)


@pytest.fixture
def git_server(remote: Remote, tmp_path: Path) -> Iterator[GitServer]:
    gates = tmp_path / "push-gates"
    gates.mkdir()
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE.format(gates=gates))
    hook.chmod(0o755)
    port = free_port()
    args = [
        "git",
        "daemon",
        "--reuseaddr",
        f"--base-path={remote.bare.parent}",
        "--export-all",
        "--enable=receive-pack",
        "--listen=127.0.0.1",
        f"--port={port}",
    ]
    process = Process("git-daemon", args, tmp_path / "git-daemon.log").start()

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    process.wait_until(listening, 30, "listening")
    yield GitServer(remote, process, f"git://127.0.0.1:{port}/{remote.bare.name}", gates)
    process.stop()


@dataclass
class Sidecars:
    """Starts the sidecar (cycling every second) with a recorded, gated git and its own --state-dir."""

    kubeconfig: Path
    namespace: str
    tmp: Path
    git: CommandWrapper
    state_dir: Path
    started: list[Process]

    def start(self, registry_host: str, *extra: str) -> Process:
        args = sidecar_args(
            self.kubeconfig, self.namespace, _registry(registry_host), "--interval", "1", *extra
        )
        args += ["--state-dir", str(self.state_dir), "--health-port", "0", "--metrics-port", "0"]
        env = dict(_environment(), PYTHONUNBUFFERED="1")
        env["PATH"] = os.pathsep.join([str(self.git.path.parent), env.get("PATH", "")])
        log = self.tmp / f"sidecar-{len(self.started)}.log"
        process = Process("sidecar", [sys.executable, "-m", "helmrelease", *args], log, env=env).start()
        self.started.append(process)
        return process

    def state_files_whole(self) -> list[str]:
        """Every state file (outside the git clone) parses; a leftover temporary file counts as half-written."""
        found = []
        for path in sorted(self.state_dir.rglob("*")):
            relative = path.relative_to(self.state_dir)
            if relative.parts[0] == "git" or not path.is_file():
                continue
            assert not path.name.endswith(".tmp"), f"half-written state file left behind: {relative}"
            if path.suffix == ".json":
                json.loads(path.read_text())
            found.append(str(relative))
        return found


@dataclass(frozen=True)
class _registry:
    """What `sidecar_args` needs of a registry: the host it is reached at (maybe a proxy's)."""

    host: str


@pytest.fixture
def sidecars(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[Sidecars]:
    git = CommandWrapper.create(tmp_path / "git-wrapper", "git", name="git")
    started: list[Process] = []
    yield Sidecars(kubeconfig, namespace, tmp_path, git, tmp_path / "state", started)
    git.disarm_all()
    for process in started:
        process.stop()


def moves(releases: Releases, name: str) -> int:
    return len(releases.events(name, "ImageUpdated"))


def tag(releases: Releases, name: str) -> str:
    return str(releases.values(name)["image"]["tag"])


# --- mid-cycle: the scan stalled on the registry --------------------------------------------------------------


@pytest.fixture
def proxy(registry: Registry) -> Iterator[RegistryProxy]:
    proxy = RegistryProxy(registry.host).start()
    yield proxy
    proxy.stop()


def test_killed_mid_cycle_the_restart_moves_the_tag_once(
    sidecars: Sidecars, releases: Releases, proxy: RegistryProxy, app: str, registry: Registry
) -> None:
    image = app.replace(registry.host, proxy.host)  # the same repository, reached through the proxy
    releases.create("hr", {"image": {"repository": image, "tag": "1.0.0"}}, {**AUTOMATED, **SEMVER})
    proxy.hold()
    first = sidecars.start(proxy.host)
    first.wait_until(lambda: proxy.stalled > 0, TIMEOUT, "its first scan stalled on the registry")
    first.kill()
    assert tag(releases, "hr") == "1.0.0"
    assert moves(releases, "hr") == 0
    sidecars.state_files_whole()
    proxy.release()
    restarted = sidecars.start(proxy.host)
    restarted.wait_until(lambda: tag(releases, "hr") == "1.0.5", TIMEOUT, "the tag moved")
    wait_for_cycles(restarted, 2)
    assert tag(releases, "hr") == "1.0.5"
    assert moves(releases, "hr") == 1, "moved once"
    restarted.stop()  # SIGTERM: the tag cache is written on the way out (and every minute of a long cycle)
    assert "tag-cache.json" in sidecars.state_files_whole()


SEMVER = {"fluxcd.io/tag.chart-image": "semver:~1.0"}


def cycles(process: Process) -> int:
    return process.log_path.read_text(errors="replace").count("scan cycle: ")


def wait_for_cycles(process: Process, more: int) -> None:
    """Wait until `more` cycles have finished after now: each had its chance to move the tag again."""
    target = cycles(process) + more
    process.wait_until(lambda: cycles(process) >= target, TIMEOUT, f"through {more} more scan cycles")


# --- git write-back -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point", ["before-clone", "after-clone", "before-commit", "before-push", "mid-push", "after-push"]
)
def test_killed_during_git_writeback_the_move_lands_once(
    point: str,
    sidecars: Sidecars,
    git_server: GitServer,
    releases: Releases,
    registry: Registry,
    app: str,
    namespace: str,
) -> None:
    manifest = MANIFEST.format(namespace=namespace, image=app)
    seed(git_server.remote, {"apps/hr.yaml": manifest})
    seeded = git_server.remote.count()
    releases.create("hr", {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1}, WRITEBACK)
    git = sidecars.git
    gate = None
    if point == "mid-push":
        git_server.hold_next_push()
    else:
        where, command = {
            "before-clone": (BEFORE, "clone"),
            "after-clone": (AFTER, "clone"),
            "before-commit": (BEFORE, "commit"),
            "before-push": (BEFORE, "push"),
            "after-push": (AFTER, "push"),
        }[point]
        gate = git.arm(where, command)
    first = sidecars.start(registry.host, "--git-url", git_server.url, "--git-branch", "main")
    if gate is not None:
        gate.wait_held(TIMEOUT, context=first.log_path.read_text)
    else:
        first.wait_until(git_server.push_held, TIMEOUT, "its push held by the server's pre-receive hook")
    first.kill()
    if gate is not None:
        gate.open()
    git_server.release_push()
    eventually(git_server.idle, TIMEOUT, "the server to finish the push it was serving")
    assert tag(releases, "hr") == "1.0.0", "killed before the cluster was patched"
    sidecars.state_files_whole()
    pushed_before = git_server.remote.count() - seeded
    expected_before = {"after-push": 1, "mid-push": None}.get(point, 0)
    if expected_before is not None:
        assert pushed_before == expected_before

    restarted = sidecars.start(registry.host, "--git-url", git_server.url, "--git-branch", "main")
    restarted.wait_until(lambda: tag(releases, "hr") == "1.0.5", TIMEOUT, "the tag moved in the cluster")
    wait_for_cycles(restarted, 2)
    assert git_server.remote.count() == seeded + 1, "one commit for the move: not lost, not twice"
    assert git_server.remote.changed_lines() == ["-      tag: 1.0.0", "+      tag: 1.0.5"]
    assert git_server.remote.show("apps/hr.yaml") == manifest.replace("tag: 1.0.0", "tag: 1.0.5")
    assert tag(releases, "hr") == "1.0.5"
    assert moves(releases, "hr") == 1, "moved once in the cluster"
    pushed = [call for call in git.calls("push") if call.returncode == 0]
    if point == "mid-push":
        assert len(pushed) == 1 - pushed_before, "pushed again only if the killed push did not land"
    else:
        assert len(pushed) == 1, "one push that landed"
    restarted.stop()
    assert "tag-cache.json" in sidecars.state_files_whole()
    record(point, pushed_before)


def record(point: str, pushed_before: int) -> None:
    """What the kill left on the remote, for the closing note's table (pytest -s shows it)."""
    print(f"\nsidecar kill {point}: {pushed_before} commit(s) on the remote before the restart")
