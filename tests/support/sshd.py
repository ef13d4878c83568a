"""A real OpenSSH server on loopback for git over SSH: its own host key, config and port, one client key allowed.

It runs as the current user (``sshd -D -f <config>``), so it serves that user's repositories by absolute path
(``ssh://<user>@127.0.0.1:<port>/<path>.git``) with the user's own git. Debian's ``openssh-server`` is installed
when ``/usr/sbin/sshd`` is missing, with the package's service kept from starting (policy-rc.d): only our sshd,
on 127.0.0.1, runs.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import Process, StartupError, free_port

SSHD = Path("/usr/sbin/sshd")
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def ensure_openssh_server() -> None:
    """Install Debian's openssh-server if sshd is missing (needs root, as on the CI machine)."""
    if SSHD.exists():
        return
    if os.geteuid() != 0:
        raise StartupError(f"{SSHD} is missing: run `apt-get install -y openssh-server` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    placed = not POLICY_RC.exists()
    if placed:  # keep the package's own sshd service (port 22, every interface) from starting
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    finally:
        if placed:
            POLICY_RC.unlink()
    if not SSHD.exists():
        raise StartupError(f"installing openssh-server left no {SSHD}")


def keygen(path: Path, comment: str) -> Path:
    """A new ed25519 key pair at `path` (and `path`.pub), without a passphrase."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@dataclass
class SshServer:
    process: Process
    port: int
    user: str
    host_key: Path
    client_key: Path

    def url(self, repository: Path) -> str:
        """The ssh:// URL of a repository on this machine, by absolute path."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repository}"

    def known_hosts(self, host_key: Path | None = None) -> str:
        """A known_hosts line for this server, with its own host key or another one (a wrong host key)."""
        public = (host_key or self.host_key).with_suffix(".pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n"

    def stop(self) -> None:
        self.process.stop()


def start(directory: Path) -> SshServer:
    ensure_openssh_server()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    host_key = keygen(directory / "ssh_host_ed25519_key", "test sshd host key")
    client_key = keygen(directory / "client_ed25519", "helmrelease test client")
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory, when root
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "AuthenticationMethods publickey",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {getpass.getuser()}",
                "StrictModes no",
                "UsePAM no",
                "PrintMotd no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    process = Process("sshd", [str(SSHD), "-D", "-e", "-f", str(config)], directory / "sshd.log").start()

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")

    process.wait_until(listening, 30, f"listening on 127.0.0.1:{port}")
    return SshServer(process, port, getpass.getuser(), host_key, client_key)


def ssh_available() -> bool:
    return SSHD.exists() and shutil.which("ssh") is not None
