"""The operate commands' flags and cluster defaults: kubectl's namespace rule, bad input as exit 2, progress lines."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from helmrelease.adapters.kube import ClientConfigError, kubeconfig_namespace
from helmrelease.cli import parse
from helmrelease.cli.operate import ProgressDisplay
from helmrelease.cli.waiting import Progress, State

KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: with-ns
contexts:
- name: with-ns
  context: {cluster: c, user: u, namespace: team-a}
- name: without-ns
  context: {cluster: c, user: u}
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    return path


@pytest.mark.parametrize(
    ("argv", "namespace"),
    [
        pytest.param([], "team-a", id="current-context"),
        pytest.param(["--context", "without-ns"], "default", id="context-without-namespace"),
        pytest.param(["-n", "explicit"], "explicit", id="flag-wins"),
    ],
)
def test_the_namespace_defaults_like_kubectl(kubeconfig: Path, argv: list[str], namespace: str) -> None:
    args = parse(["suspend", "web", "--kubeconfig", str(kubeconfig), *argv])
    assert args.settings.resolved_namespace() == namespace


def test_an_unknown_context_or_a_missing_kubeconfig_is_a_clear_error(
    kubeconfig: Path, tmp_path: Path
) -> None:
    with pytest.raises(ClientConfigError, match="no context 'nope'"):
        kubeconfig_namespace(kubeconfig, "nope")
    with pytest.raises(ClientConfigError, match="does not exist"):
        kubeconfig_namespace(tmp_path / "missing")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["reconcile", "web", "--timeout", "0s"],
            "--timeout: must be a positive duration",
            id="zero-timeout",
        ),
        pytest.param(["get", "-o", "xml"], "--output: must be one of table, json, yaml", id="bad-output"),
        pytest.param(
            ["history", "web", "--namespace="], "--namespace: must not be empty", id="empty-namespace"
        ),
    ],
)
def test_bad_flags_exit_two_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"helmrelease: error: {message}")


def test_bad_flags_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["reconcile", "web", "--timeout", "soon"])
    assert (
        capsys.readouterr().err
        == "helmrelease: error: --timeout: must be a duration such as 30s, 5m or 1h30m, not 'soon'\n"
    )


def test_force_and_reset_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(["reconcile", "web", "--force", "--reset"])
    assert exit_.value.code == 2


def test_a_name_and_all_namespaces_parse_and_n_excludes_a(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse(["get", "-A"]).settings.all_namespaces
    with pytest.raises(SystemExit):
        parse(["get", "-A", "-n", "x"])


def test_progress_without_a_terminal_is_one_plain_line_per_change() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, interactive=False)
    display.report(Progress(State.PENDING, "waiting for the operator"))
    display.report(Progress(State.WORKING, "phase Upgrading", "Progressing"))
    display.report(
        Progress(State.READY, "Release upgraded", "UpgradeSucceeded")
    )  # the command's last line says it
    assert stream.getvalue() == "Pending: waiting for the operator\nWorking (Progressing): phase Upgrading\n"
    assert "\r" not in stream.getvalue()
    assert "\033" not in stream.getvalue()


async def test_progress_on_a_terminal_is_a_spinner_line_cleared_at_the_end() -> None:
    stream = io.StringIO()
    async with ProgressDisplay(stream, interactive=True) as display:
        display.report(Progress(State.WORKING, "upgrading"))
        await asyncio.sleep(0.25)
    output = stream.getvalue()
    assert "\r\033[K" in output
    assert "Working: upgrading" in output
    assert output.endswith("\r\033[K")


def test_in_a_pod_without_a_kubeconfig_the_namespace_is_the_service_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    mounted = tmp_path / "namespace"
    mounted.write_text("ops\n")
    monkeypatch.setattr("helmrelease.adapters.kube.SERVICE_ACCOUNT_NAMESPACE", mounted)
    assert kubeconfig_namespace() == "ops"
    with pytest.raises(ClientConfigError):
        kubeconfig_namespace(context="named")  # a context means a kubeconfig is wanted
    mounted.unlink()
    with pytest.raises(ClientConfigError):
        kubeconfig_namespace()
