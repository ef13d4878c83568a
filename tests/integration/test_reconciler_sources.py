"""Chart sources, credentials, the shipped examples and multi-tenancy, through the real operator."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.support import charts as charts_mod
from tests.support.charts import ChartRepository
from tests.support.examples import (
    TARGET_NAMESPACES,
    commit_and_push,
    git_chart_repository,
    render_examples,
)
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    StartOperator,
    condition,
    create_hr,
    create_secret,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
    wait_for_resyncs,
)
from tests.support.registry import Registry

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")


@pytest.fixture(scope="module")
def auth_chart_repo(helm: Helm, workdir: Path) -> Iterator[ChartRepository]:
    repo = charts_mod.serve_repository(
        helm, workdir / "chart-repo-auth", username="reader", password="s3cret"
    )
    yield repo
    repo.stop()


@pytest.fixture(scope="module")
def tls_chart_repo(helm: Helm, workdir: Path) -> Iterator[tuple[ChartRepository, str]]:
    """A chart repository over HTTPS whose certificate only our own CA vouches for; yields it and the CA PEM."""
    from tests.support import pki

    certificates = pki.generate(workdir / "chart-repo-tls-pki")
    repo = charts_mod.serve_repository(helm, workdir / "chart-repo-tls", tls=certificates)
    yield repo, certificates.ca_cert.read_text()
    repo.stop()


create = create_hr


def test_git_chart_follows_commits_to_its_directory(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    helm: Helm,
) -> None:
    url, work = git_chart_repository(tmp_path)
    operator = start_operator("--git-protocols", "file", "--resync-interval", "2")
    create(
        custom,
        namespace,
        helmrelease("gitapp", {"git": url, "ref": "main", "path": "charts/app"}, {"message": "from git"}),
    )
    hr = wait_for_hr(custom, namespace, "gitapp", ready, operator=operator)
    first = hr["status"]["revision"]
    assert len(first) == 40  # the commit
    release = f"{namespace}-gitapp"
    # A commit elsewhere in the repository moves the branch but not the chart: no upgrade.
    (work / "README.md").write_text("changed\n")
    commit_and_push(work, "Docs only")
    wait_for_resyncs(custom, namespace, "gitapp", 2, operator=operator)  # the second one fetched that commit
    assert [e["revision"] for e in helm.json("history", release, "--namespace", namespace)] == [1], (
        operator.tail()
    )
    # A commit to the chart upgrades the release on the next resync.
    configmap = work / "charts" / "app" / "templates" / "configmap.yaml"
    configmap.write_text(configmap.read_text() + '  fromGit: "yes"\n')
    second = commit_and_push(work, "Change the chart")
    hr = wait_for_hr(
        custom,
        namespace,
        "gitapp",
        lambda hr: hr["status"].get("revision") == second,
        operator=operator,
        what=f"revision {second}",
    )
    assert core.read_namespaced_config_map(release, namespace).data["fromGit"] == "yes"


def test_git_chart_path_escaping_the_repository_is_refused(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    tmp_path: Path,
) -> None:
    url, _ = git_chart_repository(tmp_path)
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        create(custom, namespace, helmrelease("escape", {"git": url, "path": "../../etc"}))
    assert refused.value.status == 422


@pytest.mark.parametrize(
    ("password", "expect_ready"),
    [pytest.param("s3cret", True, id="good-credentials"), pytest.param("wrong", False, id="bad-credentials")],
)
def test_chart_pull_secret(
    password: str,
    expect_ready: bool,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    auth_chart_repo: ChartRepository,
) -> None:
    create_secret(core, namespace, "repo-creds", {"username": "reader", "password": password})
    operator = start_operator()
    chart = {
        "repository": auth_chart_repo.url,
        "name": "app",
        "version": "0.1.0",
        "chartPullSecret": {"name": "repo-creds"},
    }
    create(custom, namespace, helmrelease("private", chart))
    if expect_ready:
        wait_for_hr(custom, namespace, "private", ready, operator=operator)
        return
    hr = wait_for_condition(custom, namespace, "private", "ChartFetched", status="False", operator=operator)
    message = condition(hr, "ChartFetched")["message"]
    assert "401" in message or "nauthorized" in message
    assert password not in message


def test_examples_reconcile(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
    oci_charts: str,
    registry: Registry,
    tmp_path: Path,
    kubeconfig: Path,
) -> None:
    git_url, _ = git_chart_repository(tmp_path)
    for target in TARGET_NAMESPACES:
        if target not in {ns.metadata.name for ns in core.list_namespace().items}:
            core.create_namespace(
                k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=target, labels={"helmrelease-test": "1"}))
            )
            core.create_namespaced_service_account(
                target, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
            )
    manifests = render_examples(chart_repository=chart_repo.url, oci_base=oci_charts, git_url=git_url)
    operator = start_operator("--git-protocols", "https,ssh,file", "--insecure-registry", registry.host)
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", input_text=manifests)
    names = [
        item["metadata"]["name"]
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    ]
    assert len(names) >= 4
    for name in names:
        wait_for_hr(custom, namespace, name, ready, timeout=180, operator=operator, what="Ready")
    table = kubectl(kubeconfig, "get", "hr", "-n", namespace)
    assert "Ready" in table.splitlines()[0].replace("READY", "Ready")


def test_multi_tenancy_impersonates_the_service_account(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="deployer"))
    )
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="nobody"))
    )
    rbac = k8s.RbacAuthorizationV1Api(api_client)
    # A Role of our own: the built-in `admin` is aggregated by the controller-manager, which this cluster lacks.
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="deployer"),
            rules=[k8s.V1PolicyRule(api_groups=["", "apps"], resources=["*"], verbs=["*"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="deployer"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="deployer"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="deployer", namespace=namespace)],
        ),
    )
    operator = start_operator("--require-service-account")
    create(custom, namespace, helmrelease("anonymous", chart))
    create(custom, namespace, helmrelease("powerless", chart, serviceAccountName="nobody"))
    create(custom, namespace, helmrelease("tenant", chart, serviceAccountName="deployer"))

    wait_for_hr(custom, namespace, "tenant", ready, operator=operator)
    hr = wait_for_condition(custom, namespace, "anonymous", "Ready", status="False", operator=operator)
    assert "serviceAccountName is required" in condition(hr, "Released")["message"]
    hr = wait_for_condition(
        custom, namespace, "powerless", "Released", reason="InstallFailed", operator=operator
    )
    assert "forbidden" in condition(hr, "Released")["message"].lower()


def test_secret_values_never_reach_status_or_events(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    create_secret(core, namespace, "db", {"values.yaml": "message: hunter2-password\nfailure: render\n"})
    operator = start_operator()
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    create(custom, namespace, helmrelease("secretive", chart, valuesFrom=[{"secretKeyRef": {"name": "db"}}]))
    hr = wait_for_condition(
        custom, namespace, "secretive", "Released", reason="InstallFailed", operator=operator
    )
    events = core.list_namespaced_event(namespace).items
    assert "hunter2" not in str(hr["status"])
    assert all("hunter2" not in (event.message or "") for event in events)
    assert "hunter2" not in operator.log()
    assert base64.b64encode(b"hunter2").decode() not in operator.log()


@pytest.mark.parametrize("trusted", [True, False], ids=["ca-in-chart-pull-secret", "unknown-ca"])
def test_chart_repository_with_a_private_ca(
    trusted: bool,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    tls_chart_repo: tuple[ChartRepository, str],
) -> None:
    repo, ca_pem = tls_chart_repo
    chart: dict[str, Any] = {"repository": repo.url, "name": "app", "version": "0.1.0"}
    if trusted:
        create_secret(core, namespace, "repo-ca", {"ca.crt": ca_pem})
        chart["chartPullSecret"] = {"name": "repo-ca"}
    operator = start_operator()
    create(custom, namespace, helmrelease("tls", chart))
    if trusted:
        hr = wait_for_hr(custom, namespace, "tls", ready, operator=operator)
        assert hr["status"]["revision"] == "0.1.0"
        return
    hr = wait_for_condition(custom, namespace, "tls", "ChartFetched", status="False", operator=operator)
    assert "certificate" in condition(hr, "ChartFetched")["message"]
