"""Multi-tenancy and secrets, through the real operator, apiserver (RBAC on) and helm.

A tenant is a ServiceAccount with a Role in its own namespace. With `--require-service-account` everything the operator
does on a HelmRelease's behalf (helm, reading values sources and chart credentials, annotating and deleting the
release's objects) is done as that account; values that came from Secrets never reach status, Events or logs.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tests.support import charts as charts_mod
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    StartOperator,
    condition,
    create_config_map,
    create_hr,
    create_secret,
    events_for,
    get_hr,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
)
from tests.support.rbac import create_service_account, grant, rule, wait_until_allowed

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

#: What a tenant needs to install the `app` chart into its own namespace.
DEPLOYER_RULES = [rule("", ["*"], ["*"]), rule("apps", ["*"], ["*"])]


@pytest.fixture
def other_namespace(core: k8s.CoreV1Api) -> Iterator[str]:
    """Another tenant's namespace (team-b to the test namespace's team-a)."""
    name = f"team-b-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"helmrelease-test": "1"}))
    )
    yield name
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)
        core.replace_namespace_finalize(
            name,
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name), spec=k8s.V1NamespaceSpec(finalizers=[])),
        )


@pytest.fixture(scope="module")
def auth_chart_repo(helm: Helm, workdir: Path) -> Iterator[ChartRepository]:
    repo = charts_mod.serve_repository(
        helm, workdir / "chart-repo-tenancy-auth", username="reader", password="s3cret-pw"
    )
    yield repo
    repo.stop()


def release_secrets(core: k8s.CoreV1Api, namespace: str, release: str) -> list[str]:
    """Helm's storage Secrets of `release`: empty when helm never stored a revision."""
    items = core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    return [item.metadata.name for item in items]


def everything_written(
    core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi, namespace: str, name: str, log: str
) -> str:
    """Status, Events and the operator's log: everywhere a person looks."""
    events = " ".join(f"{reason}: {message}" for _, reason, message in events_for(core, namespace, name))
    return f"{get_hr(custom, namespace, name).get('status')}\n{events}\n{log}"


# --- item: values from Secrets never leave through helm's errors -------------------------------------------------


@pytest.mark.parametrize("helm_binary", ["helm", "helm3"])
def test_values_from_secrets_are_masked_where_the_api_server_quotes_them(
    helm_binary: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    label = 'hunter2 "label" secret!'  # not a valid label value; a quote, so the API server escapes it
    port = 9876543  # YAML reads it as a number; not a valid port
    create_secret(core, namespace, "labels", {"values.yaml": f"tier: '{label}'\n"})
    create_secret(core, namespace, "legacy", {"values.yaml": f"port: {port}\n"})
    operator = start_operator(helm=helm_binary)
    chart = {"repository": chart_repo.url, "name": "validated", "version": "0.1.0"}
    create_hr(
        custom,
        namespace,
        helmrelease(
            "quoted",
            chart,
            valueFileSecrets=[{"name": "legacy"}],
            valuesFrom=[{"secretKeyRef": {"name": "labels"}}],
        ),
    )
    hr = wait_for_condition(
        custom, namespace, "quoted", "Released", reason="InstallFailed", operator=operator
    )
    message = condition(hr, "Released")["message"]
    assert "Invalid value" in message, message
    assert '"***"' in message  # the label, masked where helm quoted it
    written = everything_written(core, custom, namespace, "quoted", operator.log())
    assert "InstallFailed" in written
    for spelling in ("hunter2", 'hunter2 \\"label\\"', str(port), "9.876543e+06", "ODc2NTQz"):
        assert spelling not in written, spelling
    assert base64.b64encode(label.encode()).decode() not in written


# --- item: credentials in chart.repository ------------------------------------------------------------------------


def test_credentials_in_the_repository_url_are_masked_in_our_messages(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    auth_chart_repo: ChartRepository,
) -> None:
    operator = start_operator()
    port = auth_chart_repo.url.split(":")[-1]
    for name, password in (("good", "s3cret-pw"), ("bad", "wr0ng-pw")):
        chart = {
            "repository": f"http://reader:{password}@127.0.0.1:{port}",
            "name": "app",
            "version": "0.1.0",
        }
        create_hr(custom, namespace, helmrelease(name, chart))
    hr = wait_for_hr(custom, namespace, "good", ready, operator=operator)
    assert (
        condition(hr, "ChartFetched")["message"]
        == f"Fetched chart app 0.1.0 from http://***@127.0.0.1:{port}"
    )
    hr = wait_for_condition(custom, namespace, "bad", "ChartFetched", status="False", operator=operator)
    assert f"http://***@127.0.0.1:{port}" in condition(hr, "ChartFetched")["message"]
    log = operator.log()
    for name, password in (("good", "s3cret-pw"), ("bad", "wr0ng-pw")):
        assert password not in everything_written(core, custom, namespace, name, log)


# --- item: lockdown reads as the tenant ---------------------------------------------------------------------------


def test_lockdown_reads_values_sources_and_chart_secrets_as_the_tenant(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    other_namespace: str,
    chart_repo: ChartRepository,
) -> None:
    deployer = create_service_account(core, namespace, "deployer")
    create_service_account(core, namespace, "nobody")
    grant(api_client, namespace, "deployer", (namespace, "deployer"), DEPLOYER_RULES)
    create_secret(core, other_namespace, "team-b-secret", {"values.yaml": "message: team-b-password\n"})
    create_config_map(core, other_namespace, "team-b-config", {"values.yaml": "message: team-b-config\n"})
    create_secret(core, namespace, "pull", {"username": "reader", "password": "anything"})
    wait_until_allowed(api_client, deployer, namespace, "get", "secrets")
    operator = start_operator("--require-service-account", namespaces=[namespace, other_namespace])
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    for name, ref in (
        ("steal-secret", {"secretKeyRef": {"name": "team-b-secret", "namespace": other_namespace}}),
        ("steal-config", {"configMapKeyRef": {"name": "team-b-config", "namespace": other_namespace}}),
        # optional does not make a forbidden source look missing: nothing is installed without it
        (
            "steal-optional",
            {"secretKeyRef": {"name": "team-b-secret", "namespace": other_namespace, "optional": True}},
        ),
    ):
        create_hr(
            custom, namespace, helmrelease(name, chart, serviceAccountName="deployer", valuesFrom=[ref])
        )
    create_hr(
        custom,
        namespace,
        helmrelease("pull", {**chart, "chartPullSecret": {"name": "pull"}}, serviceAccountName="nobody"),
    )

    for name, kind, source in (
        ("steal-secret", "Secret", "Secret team-b-secret key values.yaml"),
        ("steal-config", "ConfigMap", "ConfigMap team-b-config key values.yaml"),
        ("steal-optional", "Secret", "Secret team-b-secret key values.yaml"),
    ):
        hr = wait_for_condition(custom, namespace, name, "Released", reason="ValuesError", operator=operator)
        assert condition(hr, "Released")["message"] == (
            f"{source} in namespace {other_namespace} is forbidden for ServiceAccount {namespace}/deployer, which "
            f"this HelmRelease acts as (spec.serviceAccountName): grant that account get on the {kind}, or use "
            "one it may read"
        )
        assert condition(hr, "Ready")["status"] == "False"
        assert release_secrets(core, namespace, f"{namespace}-{name}") == []
    hr = wait_for_condition(custom, namespace, "pull", "ChartFetched", status="False", operator=operator)
    assert condition(hr, "ChartFetched")["message"].startswith(
        f"Fetching chart app 0.1.0 from {chart_repo.url} failed: Secret {namespace}/pull (chart.chartPullSecret) "
        f"is forbidden for ServiceAccount {namespace}/nobody"
    )
    assert "team-b-password" not in operator.log()

    # Reads are made as the tenant, not refused outright: once team-b lets the account read its Secret, it may.
    grant(
        api_client,
        other_namespace,
        "share-with-team-a",
        (namespace, "deployer"),
        [rule("", ["secrets"], ["get"], names=["team-b-secret"])],
    )
    wait_until_allowed(api_client, deployer, other_namespace, "get", "secrets", name="team-b-secret")
    core.patch_namespaced_secret(
        "team-b-secret", other_namespace, {"stringData": {"values.yaml": "message: shared-by-team-b\n"}}
    )
    wait_for_hr(custom, namespace, "steal-secret", ready, operator=operator)
    assert core.read_namespaced_config_map(f"{namespace}-steal-secret", namespace).data["message"] == (
        "shared-by-team-b"
    )
    hr = get_hr(custom, namespace, "steal-config")
    assert condition(hr, "Released")["reason"] == "ValuesError"  # the ConfigMap is still not shared


# --- item: lockdown writes as the tenant --------------------------------------------------------------------------


def test_lockdown_annotates_the_release_objects_as_the_tenant(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    """helm v3 creates objects (v4 applies them with patches), so the tenant can create a ConfigMap without being
    allowed to patch one: the operator's antecedent annotation on it is then refused, and only that."""
    deployer = create_service_account(core, namespace, "deployer")
    grant(
        api_client,
        namespace,
        "deployer",
        (namespace, "deployer"),
        [
            rule("", ["secrets", "services"], ["*"]),
            rule("apps", ["deployments"], ["*"]),
            rule("", ["configmaps"], ["get", "list", "watch", "create", "delete"]),
        ],
    )
    wait_until_allowed(api_client, deployer, namespace, "create", "configmaps")
    operator = start_operator("--require-service-account", helm="helm3")
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    create_hr(custom, namespace, helmrelease("marked", chart, serviceAccountName="deployer"))
    wait_for_hr(custom, namespace, "marked", ready, operator=operator)
    release = f"{namespace}-marked"
    antecedent = f"{namespace}:helmrelease/marked"
    service = core.read_namespaced_service(release, namespace)
    assert (service.metadata.annotations or {}).get("helm.fluxcd.io/antecedent") == antecedent
    config_map = core.read_namespaced_config_map(release, namespace)
    assert "helm.fluxcd.io/antecedent" not in (config_map.metadata.annotations or {})
    assert (
        f"did not annotate ConfigMap {namespace}/{release} of release {namespace}/{release}: forbidden for "
        f"ServiceAccount {namespace}/deployer"
    ) in operator.log()


# --- item: a ServiceAccount that does not exist --------------------------------------------------------------------


def test_a_missing_service_account_is_reported_and_used_once_it_exists(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    operator = start_operator("--require-service-account", resync_interval=2)
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    create_hr(custom, namespace, helmrelease("early", chart, serviceAccountName="deployer"))
    hr = wait_for_condition(
        custom, namespace, "early", "Released", reason="ServiceAccountNotFound", operator=operator
    )
    expected = f"ServiceAccount {namespace}/deployer does not exist; create it or fix spec.serviceAccountName"
    assert condition(hr, "Released")["message"] == expected
    assert condition(hr, "Ready")["status"] == "False"
    assert release_secrets(core, namespace, f"{namespace}-early") == []  # helm never ran as a missing account
    # A second pass (the first resync) finds it missing again: the same condition, and no second Event.
    operator.process.wait_until(
        lambda: operator.log().count(f"failed temporarily: {expected}") >= 2, 60, "through a second pass"
    )

    # The account appears: the retry already scheduled installs the release, with no change to the HelmRelease.
    deployer = create_service_account(core, namespace, "deployer")
    grant(api_client, namespace, "deployer", (namespace, "deployer"), DEPLOYER_RULES)
    wait_until_allowed(api_client, deployer, namespace, "create", "configmaps")
    wait_for_hr(
        custom, namespace, "early", ready, timeout=240, operator=operator, what="Ready after the retry"
    )
    reported = [e for e in events_for(core, namespace, "early") if e[1] == "ServiceAccountNotFound"]
    assert reported == [("Warning", "ServiceAccountNotFound", expected)]

    # Without the account there is no one to uninstall as: the deletion waits for it, and says so.
    core.delete_namespaced_service_account("deployer", namespace)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "early")
    waiting = f"{expected}: release {namespace}/{namespace}-early is not uninstalled until it exists"
    wait_for_hr(
        custom,
        namespace,
        "early",
        lambda _: ("Warning", "ServiceAccountNotFound", waiting) in events_for(core, namespace, "early"),
        operator=operator,
        what="the Event saying why it is not uninstalled",
    )
    assert release_secrets(core, namespace, f"{namespace}-early") != []
