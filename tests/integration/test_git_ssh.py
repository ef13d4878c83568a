"""git over SSH against a real OpenSSH server on loopback, with host key checking on: git charts through the real
operator (``--git-ssh-key``, ``--git-known-hosts``) and image write-back through the real sidecar
(``helmrelease image-policy --git-url ssh://...``).

The server has a host key of its own; the known_hosts file the operator or sidecar is given (as it would be
mounted from a Secret or ConfigMap) either holds that key or another one. A wrong or missing host key must fail
before our key is ever offered, with a message that says so and what to do, and recover once known_hosts is right.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from tests.integration.test_git_writeback import Remote
from tests.integration.test_image_policy import AUTOMATED, MANIFEST, Releases, app, releases, seed
from tests.integration.test_image_policy_cli import helmrelease_cli, sidecar_args
from tests.support import sshd
from tests.support.examples import commit_and_push, git_chart_repository
from tests.support.helmtool import Helm
from tests.support.operator import (
    StartOperator,
    condition,
    create_hr,
    events_for,
    get_hr,
    helmrelease,
    ready,
    request_passes,
    wait_for_hr,
)
from tests.support.registry import Registry
from tests.support.wait import eventually

from helmrelease.adapters.git import HOST_KEY_ADVICE

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")
__all__ = ["app", "releases"]  # fixtures shared with test_image_policy


@pytest.fixture(scope="module")
def ssh_server(workdir: Path) -> Iterator[sshd.SshServer]:
    server = sshd.start(workdir / "sshd")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_host_key(workdir: Path) -> Path:
    """A host key that is not the server's: what a man in the middle, or a reinstalled server, presents."""
    directory = workdir / "other-host"
    directory.mkdir()
    return sshd.keygen(directory / "ssh_host_ed25519_key", "not the server")


def accepted_logins(server: sshd.SshServer) -> int:
    return server.process.log_path.read_text(errors="replace").count("Accepted publickey for ")


def test_a_git_chart_over_ssh_installs_and_follows_commits(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    ssh_server: sshd.SshServer,
    helm: Helm,
) -> None:
    _, work = git_chart_repository(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_server.known_hosts())
    operator = start_operator(
        "--git-ssh-key",
        str(ssh_server.client_key),
        "--git-known-hosts",
        str(known_hosts),
        "--git-protocols",
        "ssh",
        resync_interval=2,
    )
    url = ssh_server.url(tmp_path / "charts.git")
    create_hr(custom, namespace, helmrelease("sshapp", {"git": url, "ref": "main", "path": "charts/app"}))
    hr = wait_for_hr(custom, namespace, "sshapp", ready, operator=operator)
    first = hr["status"]["revision"]
    assert len(first) == 40
    assert condition(hr, "ChartFetched")["message"] == f"Fetched chart charts/app from {url}"

    configmap = work / "charts" / "app" / "templates" / "configmap.yaml"
    configmap.write_text(configmap.read_text() + '  overSsh: "yes"\n')
    second = commit_and_push(work, "Change the chart")
    wait_for_hr(
        custom,
        namespace,
        "sshapp",
        lambda hr: hr["status"].get("revision") == second and ready(hr),
        operator=operator,
        what=f"revision {second}",
    )
    assert core.read_namespaced_config_map(f"{namespace}-sshapp", namespace).data["overSsh"] == "yes"
    assert [e["revision"] for e in helm.json("history", f"{namespace}-sshapp", "--namespace", namespace)] == [
        1,
        2,
    ]
    # The upgrade's Event may follow the status write that said Ready: wait for it, then expect no Warning.
    eventually(lambda: len(events_for(core, namespace, "sshapp")) >= 2, 60, "the install and upgrade Events")
    assert [event[0] for event in events_for(core, namespace, "sshapp")] == ["Normal", "Normal"]


@pytest.mark.parametrize(
    ("known", "says"),
    [
        pytest.param("other", "Host key for [127.0.0.1]:{port} has changed", id="wrong-host-key"),
        pytest.param("none", "No ED25519 host key is known for [127.0.0.1]:{port}", id="unknown-host"),
    ],
)
def test_a_host_key_that_is_not_known_fails_clearly_and_heals_with_known_hosts(
    known: str,
    says: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    ssh_server: sshd.SshServer,
    other_host_key: Path,
) -> None:
    git_chart_repository(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_server.known_hosts(other_host_key) if known == "other" else "")
    operator = start_operator(
        "--git-ssh-key",
        str(ssh_server.client_key),
        "--git-known-hosts",
        str(known_hosts),
        "--git-protocols",
        "ssh",
        resync_interval=2,
    )
    logins = accepted_logins(ssh_server)
    url = ssh_server.url(tmp_path / "charts.git")
    create_hr(custom, namespace, helmrelease("sshapp", {"git": url, "ref": "main", "path": "charts/app"}))
    hr = wait_for_hr(
        custom,
        namespace,
        "sshapp",
        lambda hr: condition(hr, "Ready").get("reason") == "ChartFetchFailed",
        operator=operator,
        what="ChartFetchFailed",
    )
    message = condition(hr, "ChartFetched")["message"]
    assert message.startswith(f"Fetching chart charts/app from {url} failed: ")
    assert says.format(port=ssh_server.port) in message
    assert message.endswith(f"Host key verification failed.; {HOST_KEY_ADVICE}")
    # Resyncs try again (each one a refused connection), and say nothing new.
    request_passes(custom, namespace, "sshapp", 1, operator=operator)  # a second failed pass
    assert [(kind, reason) for kind, reason, _ in events_for(core, namespace, "sshapp")] == [
        ("Warning", "ChartFetchFailed")
    ]
    assert accepted_logins(ssh_server) == logins, "our key was offered to a host we do not trust"

    known_hosts.write_text(ssh_server.known_hosts())
    wait_for_hr(
        custom,
        namespace,
        "sshapp",
        ready,
        operator=operator,
        timeout=200,
        what="Ready with known_hosts right",
    )
    assert accepted_logins(ssh_server) > logins
    assert "Traceback" not in operator.log()
    assert len(get_hr(custom, namespace, "sshapp")["status"]["revision"]) == 40


def ssh_remote(tmp_path: Path) -> Remote:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    origin = Remote(tmp_path / "remote.git", scratch)
    origin.git("init", "--quiet", "--bare", "--initial-branch=main", str(origin.bare), cwd=tmp_path)
    return origin


@pytest.mark.parametrize("host_key", ["right", "wrong"])
def test_image_writeback_over_ssh(
    host_key: str,
    app: str,
    registry: Registry,
    releases: Releases,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    ssh_server: sshd.SshServer,
    other_host_key: Path,
) -> None:
    remote = ssh_remote(tmp_path)
    manifest = MANIFEST.format(namespace=namespace, image=app)
    seed(remote, {"clusters/app.yaml": manifest})
    releases.create(
        "hr",
        {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1},
        {
            **AUTOMATED,
            "fluxcd.io/tag.chart-image": "semver:~1.0",
            "image.helm.fluxcd.io/git-writeback": "true",
        },
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_server.known_hosts(other_host_key if host_key == "wrong" else None))
    logins = accepted_logins(ssh_server)
    url = ssh_server.url(remote.bare)

    result = helmrelease_cli(
        *sidecar_args(
            kubeconfig,
            namespace,
            registry,
            "--once",
            "--state-dir",
            str(tmp_path / "sidecar-state"),
            "--git-url",
            url,
            "--git-branch",
            "main",
            "--git-ssh-key",
            str(ssh_server.client_key),
            "--git-known-hosts",
            str(known_hosts),
        )
    )

    if host_key == "right":
        assert result.returncode == 0, result.stderr
        assert remote.count() == 2
        assert remote.changed_lines() == ["-      tag: 1.0.0", "+      tag: 1.0.5"]
        assert releases.values("hr")["image"]["tag"] == "1.0.5"
        assert sorted(reason for _, reason, _ in releases.events("hr")) == [
            "ImageGitCommitted",
            "ImageUpdated",
        ]
        assert accepted_logins(ssh_server) > logins
        return
    assert result.returncode == 1, result.stderr
    assert remote.count() == 1
    assert releases.values("hr")["image"]["tag"] == "1.0.0", "the cluster moved without git"
    [(kind, reason, message)] = releases.events("hr")
    assert (kind, reason) == ("Warning", "ImageGitWritebackFailed")
    assert f"Host key for [127.0.0.1]:{ssh_server.port} has changed" in message
    assert f"{HOST_KEY_ADVICE}; the cluster is not updated either" in message
    assert "Traceback" not in result.stderr
    assert accepted_logins(ssh_server) == logins
