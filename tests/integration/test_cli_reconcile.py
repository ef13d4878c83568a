"""``helmrelease reconcile | suspend | resume`` against the real operator: the request annotations it writes, the
echo it waits for (``status.lastHandledReconcileAt``) and the exit codes; ``spec.suspend`` set and cleared."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.integration.test_cli_operate import cli
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    StartOperator,
    condition,
    create_hr,
    get_hr,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
)

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

REQUESTED = "reconcile.fluxcd.io/requestedAt"
TOKEN = re.compile(r"\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)\)")


@pytest.fixture
def app_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}


def annotations(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, str]:
    return dict(get_hr(custom, namespace, name)["metadata"].get("annotations") or {})


def requested_token(stdout: str) -> str:
    match = TOKEN.search(stdout.splitlines()[0])
    assert match, stdout
    return match.group(1)


def test_reconcile_waits_for_the_echo_and_exits_zero_when_ready(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    kubeconfig: Path,
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("web", app_chart, {"message": "one"}))
    wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready")

    result = cli("reconcile", "web", "-n", namespace, "--timeout", "2m", kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr + operator.tail()
    token = requested_token(result.stdout)
    assert result.stdout.splitlines()[0] == f"HelmRelease {namespace}/web: reconcile requested ({token})"
    assert result.stdout.splitlines()[-1].startswith(f"HelmRelease {namespace}/web: Ready")
    assert "\r" not in result.stdout  # not a terminal: plain lines
    hr = get_hr(custom, namespace, "web")
    assert hr["metadata"]["annotations"][REQUESTED] == token
    assert hr["status"]["lastHandledReconcileAt"] == token
    print(f"\n$ helmrelease reconcile web -n {namespace}\n{result.stdout}")


def test_reconcile_of_a_failing_release_exits_one_and_says_why(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    kubeconfig: Path,
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("web", app_chart, {"failure": "render"}))
    wait_for_condition(custom, namespace, "web", "Ready", status="False", operator=operator)

    result = cli("reconcile", "web", "-n", namespace, "--timeout", "2m", kubeconfig=kubeconfig)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"HelmRelease {namespace}/web: handled, but not Ready: Failed (")
    assert "failure=render was requested" in result.stderr
    token = requested_token(result.stdout)
    assert get_hr(custom, namespace, "web")["status"]["lastHandledReconcileAt"] == token


def test_reconcile_force_is_echoed_with_the_same_token(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
    kubeconfig: Path,
) -> None:
    """A release whose upgrade failed waits for a change; --force runs one upgrade for the same configuration."""
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("web", app_chart, {"message": "one"}))
    wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready")
    custom.patch_namespaced_custom_object(
        "helm.fluxcd.io", "v1", namespace, "helmreleases", "web", {"spec": {"values": {"failure": "apply"}}}
    )
    wait_for_condition(custom, namespace, "web", "Ready", status="False", operator=operator)
    revisions = len(helm.json("history", f"{namespace}-web", "--namespace", namespace, "--max", "100"))

    result = cli("reconcile", "web", "-n", namespace, "--force", "--timeout", "3m", kubeconfig=kubeconfig)
    assert result.returncode == 1, result.stdout + result.stderr  # the configuration still fails
    token = requested_token(result.stdout)
    hr = get_hr(custom, namespace, "web")
    assert hr["metadata"]["annotations"]["reconcile.fluxcd.io/forceAt"] == token
    assert hr["status"]["lastHandledForceAt"] == token
    assert len(helm.json("history", f"{namespace}-web", "--namespace", namespace, "--max", "100")) > revisions
    assert "did not echo" not in result.stderr


def test_reconcile_without_an_operator_times_out_saying_nobody_picked_it_up(
    custom: k8s.CustomObjectsApi, namespace: str, app_chart: dict[str, str], kubeconfig: Path
) -> None:
    create_hr(custom, namespace, helmrelease("web", app_chart))
    result = cli("reconcile", "web", "-n", namespace, "--timeout", "3s", kubeconfig=kubeconfig)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"HelmRelease {namespace}/web: timed out after 3s: the operator did not pick up the request"
    )
    assert annotations(custom, namespace, "web")[REQUESTED] == requested_token(result.stdout)


def test_reconcile_of_a_missing_helmrelease_exits_two(namespace: str, kubeconfig: Path) -> None:
    result = cli("reconcile", "nothing", "-n", namespace, kubeconfig=kubeconfig)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"helmrelease reconcile: HelmRelease {namespace}/nothing not found\n"


def test_suspend_and_resume(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    kubeconfig: Path,
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("web", app_chart, {"message": "one"}))
    wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready")

    suspended = cli("suspend", "web", "-n", namespace, kubeconfig=kubeconfig)
    assert suspended.returncode == 0, suspended.stderr
    assert get_hr(custom, namespace, "web")["spec"]["suspend"] is True
    wait_for_condition(
        custom, namespace, "web", "Ready", status="False", reason="Suspended", operator=operator
    )
    [record] = json.loads(cli("get", "web", "-n", namespace, "-o", "json", kubeconfig=kubeconfig).stdout)
    assert (record["suspended"], record["ready"], record["reason"]) == (True, "False", "Suspended")
    again = cli("suspend", "web", "-n", namespace, kubeconfig=kubeconfig)
    assert (again.returncode, again.stdout) == (0, f"HelmRelease {namespace}/web is already suspended\n")
    refused = cli("reconcile", "web", "-n", namespace, kubeconfig=kubeconfig)
    assert refused.returncode == 1
    assert "is suspended: resume it first" in refused.stderr

    resumed = cli("resume", "web", "-n", namespace, kubeconfig=kubeconfig)
    assert resumed.returncode == 0, resumed.stderr
    token = requested_token(resumed.stdout)
    hr = get_hr(custom, namespace, "web")
    assert "suspend" not in hr["spec"]
    assert hr["metadata"]["annotations"][REQUESTED] == token

    def resumed_and_handled(obj: dict[str, Any]) -> bool:
        return ready(obj) and obj["status"].get("lastHandledReconcileAt") == token

    hr = wait_for_hr(
        custom, namespace, "web", resumed_and_handled, operator=operator, what="Ready after resume"
    )
    assert condition(hr, "Ready")["status"] == "True"
