"""Start, watch and stop the external processes the tests run (etcd, kube-apiserver, registry, operator)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.wait import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = REPO_ROOT / "bin"


def _die_with_parent() -> None:
    """In the child, before exec: ask the kernel to SIGTERM it when the test process dies, however it dies.

    Teardown stops components normally; this covers a test run killed by a timeout or Ctrl-C twice, which would
    otherwise leave etcd, apiservers and registries running.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class StartupError(RuntimeError):
    """A component did not become ready; the message carries its log tail."""


def binary(name: str) -> str:
    """Locate a tool built by `make tools` (bin/ first, then PATH) with a message that says how to get it."""
    candidate = BIN_DIR / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StartupError(f"{name} not found in {BIN_DIR} or PATH: run `make tools` first")
    return found


def free_port() -> int:
    """A currently free loopback TCP port (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: the fields we want follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a process that can still run (a zombie cannot: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for failure messages."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


@dataclass
class Process:
    """A child process with its log file; stopping it is idempotent and never leaves an orphan."""

    name: str
    args: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # its own process group, so stop() reaches its children too
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process and every descendant at once, as when a container dies with everything in it.

        Descendants in other sessions (helm runs in its own process group) are found through /proc first. Returns
        once none of them can run any more: nothing the process started can still change anything.
        """
        if self.popen is None:
            return
        victims = [self.popen.pid, *descendants(self.popen.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)
        # The children are reaped by whoever inherited them: wait until none can act any more.
        eventually(
            lambda: not any(alive(pid) for pid in victims), 10, f"{self.name} and its children to be dead"
        )

    def wait_until_exited(self, timeout: float) -> int:
        """The exit status once the process has ended (killed from outside, say); TimeoutExpired if it does not."""
        if self.popen is None:
            raise StartupError(f"{self.name} was never started")
        return self.popen.wait(timeout)

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until `ready()`; fail with the log tail if the process dies or time runs out.

        `ready` may raise while the process starts (a port not open yet): that counts as not ready.
        """

        def probe() -> bool:
            if not self.running:
                raise StartupError(f"{self.name} exited before {what}:\n{tail(self.log_path)}")
            with contextlib.suppress(Exception):
                return ready()
            return False

        eventually(probe, timeout, f"{self.name} {what}", context=lambda: tail(self.log_path))
