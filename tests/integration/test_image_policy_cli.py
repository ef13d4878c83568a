"""``helmrelease image-policy`` and ``helmrelease images list | update --to-latest`` as users run them.

The sidecar runs as a real process (``python -m helmrelease``) against the real control plane and registry:
``--once`` for its exit codes and output, and as a long-running loop for ``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_image_policy import AUTOMATED, Releases, app, releases
from tests.support.procs import REPO_ROOT, free_port
from tests.support.registry import Registry
from tests.support.wait import eventually

from helmrelease.cli import main

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["app", "releases"]  # fixtures shared with test_image_policy

SEMVER = {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}


def helmrelease_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helmrelease", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(),
        check=False,
    )


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "operator"), env.get("PYTHONPATH")]))
    return env


def sidecar_args(kubeconfig: Path, namespace: str, registry: Registry, *extra: str) -> list[str]:
    return [
        "image-policy",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--insecure-registry",
        registry.host,
        *extra,
    ]


def test_once_updates_prints_the_moves_and_logs_json(
    app: str, registry: Registry, releases: Releases, kubeconfig: Path, namespace: str
) -> None:
    releases.create("hr", {"image": f"{app}:1.0.0"}, SEMVER)
    result = helmrelease_cli(*sidecar_args(kubeconfig, namespace, registry, "--once", "--log-format", "json"))
    assert result.returncode == 0, result.stderr
    summary = f"{app} 1.0.0 → 1.0.5 (semver:~1.0)"
    assert result.stdout == f"{namespace}/hr chart-image: {summary}\n"
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"level": "info", "message": f"{namespace}/hr chart-image: {summary}"}.items() <= next(
        entry for entry in logged if summary in entry["message"]
    ).items()
    assert releases.values("hr") == {"image": f"{app}:1.0.5"}


def test_once_exits_one_when_something_failed(
    registry: Registry, releases: Releases, kubeconfig: Path, namespace: str
) -> None:
    missing = f"{registry.host}/team/missing-{uuid.uuid4().hex[:8]}"
    releases.create("hr", {"image": f"{missing}:1.0.0"})
    result = helmrelease_cli(*sidecar_args(kubeconfig, namespace, registry, "--once"))
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ["--git-path", "clusters"], "the --git-* flags need --git-url", id="git-flag-without-url"
        ),
        pytest.param(["--platform", "amd64"], "is not a platform", id="bad-platform"),
        pytest.param(["--registry-ca", "host=/nonexistent/ca.pem"], "No such file", id="missing-ca-file"),
        pytest.param(
            ["--docker-config", "/nonexistent/config.json"], "No such file", id="missing-docker-config"
        ),
        pytest.param(["--git-url", "file:///x", "--git-author", "nobody"], "Name <email>", id="bad-author"),
    ],
)
def test_bad_configuration_exits_two_before_anything_starts(
    flags: list[str], message: str, registry: Registry, kubeconfig: Path
) -> None:
    result = helmrelease_cli(*sidecar_args(kubeconfig, "unused", registry, "--once", *flags))
    assert result.returncode == 2
    assert message in result.stderr


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def running_sidecar(
    app: str, registry: Registry, releases: Releases, kubeconfig: Path, namespace: str
) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    health, metrics = free_port(), free_port()
    args = sidecar_args(
        kubeconfig,
        namespace,
        registry,
        "--interval",
        "1",
        "--health-port",
        str(health),
        "--metrics-port",
        str(metrics),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "helmrelease", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    try:
        yield process, health, metrics
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_the_loop_serves_health_and_metrics_and_stops_on_sigterm(
    running_sidecar: tuple[subprocess.Popen[str], int, int], app: str, registry: Registry, releases: Releases
) -> None:
    process, health_port, metrics_port = running_sidecar
    releases.create("hr", {"image": {"repository": app, "tag": "1.0.0"}}, SEMVER)

    def moved() -> bool:
        assert process.poll() is None, process.communicate()[1]
        return bool(releases.values("hr")["image"]["tag"] == "1.0.5")

    eventually(moved, 60, "the loop to move hr to 1.0.5")

    assert _get(f"http://127.0.0.1:{health_port}/healthz") == (200, "ok\n")
    status, exposition = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    assert (
        f'helmrelease_registry_requests_total{{code="200",kind="tags",registry="{registry.host}"}}'
        in exposition
    )
    assert 'helmrelease_image_updates_total{target="cluster"} 1.0' in exposition
    assert "helmrelease_image_scan_duration_seconds_count" in exposition
    assert 'helmrelease_registry_cache_lookups_total{cache="cycle_tags",result="miss"}' in exposition

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


# --- images list ----------------------------------------------------------------------------------------


def test_images_list_shows_each_image_with_its_policy_and_the_newest_eligible_tag(
    app: str, registry: Registry, releases: Releases, kubeconfig: Path, namespace: str
) -> None:
    releases.create("auto", {"image": {"repository": app, "tag": "1.0.0"}}, SEMVER)
    releases.create(
        "pinned",
        {"web": {"image": f"{app}:1.0.0"}, "db": {"image": f"{app}@sha256:{'a' * 64}"}},
        {"fluxcd.io/locked": "true", **AUTOMATED},
    )
    base = [
        "images",
        "list",
        "--kubeconfig",
        str(kubeconfig),
        "-n",
        namespace,
        "--insecure-registry",
        registry.host,
    ]

    listed = helmrelease_cli(*base, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    records = {(record["name"], record["container"]): record for record in json.loads(listed.stdout)}
    assert sorted(records) == [("auto", "chart-image"), ("pinned", "db"), ("pinned", "web")]
    auto = records["auto", "chart-image"]
    assert {k: auto[k] for k in ("image", "policy", "mode", "latest", "update", "tag_path")} == {
        "image": f"{app}:1.0.0",
        "policy": "semver:~1.0",
        "mode": "automated",
        "latest": "1.0.5",
        "update": "1.0.5",
        "tag_path": "image.tag",
    }
    web = records["pinned", "web"]
    assert (web["mode"], web["latest"], web["update"]) == ("locked", "1.1.1-rc.1", "1.1.1-rc.1")
    assert records["pinned", "db"]["reason"] == "NotAutomatable"
    assert releases.values("auto")["image"]["tag"] == "1.0.0"  # listing never changes anything

    table = helmrelease_cli(*base)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["RELEASE", "CONTAINER", "IMAGE", "POLICY", "MODE", "LATEST", "STATUS"]
    assert rows[0].split()[:7] == [
        f"{namespace}/auto",
        "chart-image",
        f"{app}:1.0.0",
        "semver:~1.0",
        "automated",
        "1.0.5",
        "update",
    ]


# --- images update --to-latest --------------------------------------------------------------------------


MANIFEST = """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: web
  namespace: apps
  annotations:
    fluxcd.io/tag.chart-image: semver:~1.0{extra}
spec:
  chart: {{repository: "http://charts.example.invalid/", name: app, version: 0.1.0}}
  values:
    image:
      repository: {image}  # keep this comment
      tag: "{tag}"
"""


def to_latest(path: Path, registry: Registry, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(
        [
            "images",
            "update",
            str(path),
            "--namespace",
            "apps",
            "--name",
            "web",
            "--container",
            "chart-image",
            "--to-latest",
            "--insecure-registry",
            registry.host,
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("tag", "extra", "code", "expected_tag", "output"),
    [
        pytest.param("1.0.0", "", 0, "1.0.5", "updated ", id="moves-to-the-newest"),
        pytest.param(
            "1.0.5",
            "",
            0,
            "1.0.5",
            "unchanged apps/web chart-image: 1.0.5 is the newest",
            id="already-newest",
        ),
        pytest.param(
            "1.0.7", "", 0, "1.0.7", "unchanged apps/web chart-image: the newest tag", id="never-downgrades"
        ),
        pytest.param("1.0.0", '\n    fluxcd.io/locked: "true"', 1, "1.0.0", "is locked", id="locked"),
        pytest.param(
            "1.0.0",
            "\n    fluxcd.io/tag-order.chart-image: numerical",
            1,
            "1.0.0",
            "numerical",
            id="no-tag-reads",
        ),
    ],
)
def test_update_to_latest_asks_the_registry_then_edits_offline(
    tag: str,
    extra: str,
    code: int,
    expected_tag: str,
    output: str,
    app: str,
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST.format(image=app, tag=tag, extra=extra))
    result, out, err = to_latest(tmp_path, registry, capsys)
    assert result == code, err
    assert output in out + err
    assert manifest.read_text() == MANIFEST.format(image=app, tag=expected_tag, extra=extra)


def test_update_to_latest_reports_an_unreachable_registry(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = f"{registry.host}/team/missing-{uuid.uuid4().hex[:8]}"
    (tmp_path / "web.yaml").write_text(MANIFEST.format(image=image, tag="1.0.0", extra=""))
    result, out, err = to_latest(tmp_path, registry, capsys)
    assert (result, out) == (3, "")
    assert "HTTP 404" in err


def test_cluster_commands_fail_clearly_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    assert main(["images", "list", "--kubeconfig", str(kubeconfig)]) == 3
    assert "helmrelease images list:" in capsys.readouterr().err
