"""``helmrelease get | diff | history`` as people run them: real processes against the real control plane, the real
operator, helm and the chart repository; ``diff --offline`` with no cluster at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from ruamel.yaml import YAML
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    StartOperator,
    create_config_map,
    create_hr,
    create_secret,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.procs import REPO_ROOT, binary

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

SECRET_ONE = "s3cret-message-one"
SECRET_TWO = "s3cret-message-two"


def cli(*args: str, kubeconfig: Path | None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``helmrelease ARGS`` as a user runs it; without ``kubeconfig`` it has none at all (``KUBECONFIG`` names a
    file that does not exist, and no service account is there)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "operator"), env.get("PYTHONPATH")]))
    env["KUBECONFIG"] = str(kubeconfig) if kubeconfig is not None else "/nonexistent/kubeconfig"
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "helmrelease", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def write_yaml(path: Path, *documents: Mapping[str, Any]) -> Path:
    yaml = YAML(typ="safe", pure=True)
    with path.open("w") as stream:
        yaml.dump_all([dict(document) for document in documents], stream)
    return path


@pytest.fixture
def app_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}


VALUES_FROM = [
    {"configMapKeyRef": {"name": "web-values"}},
    {"secretKeyRef": {"name": "web-secret"}},
]


@pytest.fixture
def installed(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> dict[str, Any]:
    """HelmRelease ``web``, Ready, its values from a ConfigMap (``replicas: 2``), a Secret (``message``) and inline."""
    operator = start_operator()
    create_config_map(core, namespace, "web-values", {"values.yaml": "replicas: 2\n"})
    create_secret(core, namespace, "web-secret", {"values.yaml": f"message: {SECRET_ONE}\n"})
    body = helmrelease("web", app_chart, {"image": {"tag": "1.0.0"}}, valuesFrom=VALUES_FROM)
    create_hr(custom, namespace, body)
    wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready")
    return body


def test_get_lists_helmreleases_like_flux(
    installed: dict[str, Any], kubeconfig: Path, namespace: str
) -> None:
    listed = cli("get", "-n", namespace, "--kubeconfig", str(kubeconfig), kubeconfig=None)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "MESSAGE", "REVISION", "CHART", "SUSPENDED"]
    assert row.split()[:2] == ["web", "True"]
    assert row.split()[-3:] == ["0.1.0", "app@0.1.0", "false"]
    print(f"\n$ helmrelease get -n {namespace}\n{listed.stdout}")

    one = cli("get", "web", "-n", namespace, "-o", "json", kubeconfig=kubeconfig)
    assert one.returncode == 0, one.stderr
    [record] = json.loads(one.stdout)
    assert {key: record[key] for key in ("namespace", "name", "ready", "chart", "revision", "suspended")} == {
        "namespace": namespace,
        "name": "web",
        "ready": "True",
        "chart": "app@0.1.0",
        "revision": "0.1.0",
        "suspended": False,
    }
    assert record["release_name"] == f"{namespace}-web"

    everywhere = cli("get", "-A", kubeconfig=kubeconfig)
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:2] == [namespace, "web"] for line in everywhere.stdout.splitlines())


def test_get_of_a_missing_helmrelease_or_without_a_cluster_exits_two(
    kubeconfig: Path, namespace: str
) -> None:
    missing = cli("get", "nothing", "-n", namespace, kubeconfig=kubeconfig)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == f"helmrelease get: HelmRelease {namespace}/nothing not found\n"
    no_cluster = cli("get", kubeconfig=None)
    assert no_cluster.returncode == 2
    assert no_cluster.stderr.startswith("helmrelease get: ")
    assert len(no_cluster.stderr.splitlines()) == 1


def test_diff_of_an_unchanged_release_is_empty_and_exits_zero(
    installed: dict[str, Any], kubeconfig: Path, namespace: str
) -> None:
    """Equal only if the ConfigMap's replicas and the Secret's message were composed as the operator composed them."""
    result = cli("diff", "web", "-n", namespace, "--helm", binary("helm"), kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (
        result.stderr
        == f"HelmRelease {namespace}/web: no differences from release {namespace}/{namespace}-web\n"
    )


def test_diff_of_changed_values_shows_the_changed_line_per_object(
    installed: dict[str, Any], kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    changed = dict(installed, spec={**installed["spec"], "values": {"image": {"tag": "1.0.1"}}})
    path = write_yaml(tmp_path / "web.yaml", changed)
    result = cli("diff", str(path), "-n", namespace, "--helm", binary("helm"), kubeconfig=kubeconfig)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == f"{namespace}, {namespace}-web, Deployment (apps) has changed:"
    changes = [(line[0], line[1:].strip()) for line in result.stdout.splitlines() if line[:1] in "+-"]
    assert changes == [("-", "image: example.invalid/app:1.0.0"), ("+", "image: example.invalid/app:1.0.1")]
    assert "ConfigMap" not in result.stdout  # the Secret's message composed the same as before
    print(f"\n$ helmrelease diff {path.name} -n {namespace}\n{result.stdout}{result.stderr}")

    as_json = cli(
        "diff", str(path), "-n", namespace, "-o", "json", "--helm", binary("helm"), kubeconfig=kubeconfig
    )
    assert as_json.returncode == 1, as_json.stderr
    record = json.loads(as_json.stdout)
    assert record["changed"] is True
    assert [(o["kind"], o["name"], o["change"]) for o in record["objects"]] == [
        ("Deployment", f"{namespace}-web", "changed")
    ]


def test_diff_never_prints_a_value_that_came_from_a_secret(
    installed: dict[str, Any],
    core: k8s.CoreV1Api,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    create_secret(core, namespace, "web-secret-2", {"values.yaml": f"message: {SECRET_TWO}\n"})
    other = [VALUES_FROM[0], {"secretKeyRef": {"name": "web-secret-2"}}]
    path = write_yaml(tmp_path / "web.yaml", dict(installed, spec={**installed["spec"], "valuesFrom": other}))
    result = cli("diff", str(path), "-n", namespace, "--helm", binary("helm"), kubeconfig=kubeconfig)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == f"{namespace}, {namespace}-web, ConfigMap (v1) has changed:"
    assert "-  message: ***\n+  message: ***\n" in result.stdout
    for secret in (SECRET_ONE, SECRET_TWO):
        assert secret not in result.stdout + result.stderr


def test_history_tells_the_operators_revisions_from_a_helm_upgrade_by_hand(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    chart_repo: ChartRepository,
    helm: Helm,
    kubeconfig: Path,
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("web", app_chart, {"message": "one"}))
    wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready after the install")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "web", {"spec": {"values": {"message": "two"}}}
    )
    wait_for_hr(
        custom,
        namespace,
        "web",
        lambda hr: ready(hr) and hr["status"].get("helmRevision") == 2,
        operator=operator,
        what="Ready after the upgrade (revision 2)",
    )
    release = f"{namespace}-web"
    package = str(chart_repo.directory / "app-0.1.0.tgz")
    helm.run(
        "upgrade", release, package, "--namespace", namespace, "--reuse-values", "--set", "message=by-hand"
    )

    result = cli("history", "web", "-n", namespace, "-o", "json", kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [(r["revision"], r["chart"], r["changed_by"]) for r in records[:3]] == [
        (1, "app-0.1.0", "operator"),
        (2, "app-0.1.0", "operator"),
        (3, "app-0.1.0", "outside"),
    ]
    assert records[0]["digest"]
    assert records[1]["digest"] not in (None, records[0]["digest"])
    assert records[2]["digest"] == records[1]["digest"]  # helm copied our labels: the description tells
    assert "by hand" in records[2]["note"]
    assert records[0]["description"] == f"install by HelmRelease {namespace}/web"

    table = cli("history", "web", "-n", namespace, kubeconfig=kubeconfig)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["REVISION", "UPDATED", "STATUS", "CHART", "APP", "VERSION", "DIGEST", "BY"]
    assert lines[1].split()[0] == "1"
    assert lines[1].split()[-1] == "operator"
    print(f"\n$ helmrelease history web -n {namespace}\n{table.stdout}")


# --- offline: no cluster ------------------------------------------------------------------------------------------


def test_offline_diff_compares_a_pull_request_with_main_without_a_cluster(
    app_chart: dict[str, str], tmp_path: Path
) -> None:
    values_file = tmp_path / "secret-values.yaml"
    values_file.write_text(f"message: {SECRET_ONE}\n")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-values"},
        "data": {"values.yaml": "replicas: 2\n"},
    }
    main = helmrelease("web", app_chart, {"image": {"tag": "1.0.0"}}, valuesFrom=VALUES_FROM)
    main["metadata"]["namespace"] = "apps"
    config_map["metadata"]["namespace"] = "apps"
    pull_request = dict(main, spec={**main["spec"], "chart": {**app_chart, "version": "0.2.0"}})
    base = write_yaml(tmp_path / "main.yaml", main, config_map)
    head = write_yaml(tmp_path / "pr.yaml", pull_request, config_map)
    flags = ["--offline", "--helm", binary("helm"), "--values-from-file", f"Secret/web-secret={values_file}"]

    changed = cli("diff", str(head), "--base", str(base), *flags, kubeconfig=None)
    assert changed.returncode == 1, changed.stderr
    assert "apps, apps-web, ConfigMap (v1) has changed:" in changed.stdout
    assert "-  chartVersion: 0.1.0\n+  chartVersion: 0.2.0\n" in changed.stdout
    assert "Deployment" not in changed.stdout  # replicas: 2 from the file's ConfigMap on both sides
    assert SECRET_ONE not in changed.stdout + changed.stderr
    print(f"\n$ helmrelease diff pr.yaml --base main.yaml --offline ...\n{changed.stdout}{changed.stderr}")

    same = cli("diff", str(base), "--base", str(base), *flags, kubeconfig=None)
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    missing = cli("diff", str(head), "--offline", "--helm", binary("helm"), kubeconfig=None)
    assert missing.returncode == 2
    assert missing.stderr == (
        "helmrelease diff: Secret web-secret key values.yaml in namespace apps does not exist "
        "(offline: give it with --values-from-file)\n"
    )

    new_install = cli("diff", str(head), *flags, kubeconfig=None)  # no --base: against nothing
    assert new_install.returncode == 1, new_install.stderr
    assert [line for line in new_install.stdout.splitlines() if line.endswith(":") and ", " in line] == [
        "apps, apps-web, ConfigMap (v1) has been added:",
        "apps, apps-web, Deployment (apps) has been added:",
        "apps, apps-web, Service (v1) has been added:",
    ]
