"""Lockdown (``--require-service-account``): a tenant's release reaches nothing of another tenant's namespace.

Team A's HelmRelease acts as a ServiceAccount with every right in A and none in B. Its chart may name B explicitly
in a template, it may install into B, it may point its chart pull secret at B: each is refused by the API server as
the tenant, reported as a condition that says so, and leaves B untouched. (Reading B's Secrets and ConfigMaps through
``valuesFrom`` is test_tenancy.py::test_lockdown_reads_values_sources_and_chart_secrets_as_the_tenant.)
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from tests.integration.test_tenancy import DEPLOYER_RULES, other_namespace, release_secrets
from tests.support.charts import ChartRepository
from tests.support.operator import (
    StartOperator,
    condition,
    create_hr,
    create_secret,
    events_for,
    get_hr,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
)
from tests.support.rbac import create_service_account, grant, wait_until_allowed

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")
__all__ = ["other_namespace"]  # a fixture shared with test_tenancy


def config_maps(core: k8s.CoreV1Api, namespace: str) -> list[str]:
    return sorted(item.metadata.name for item in core.list_namespaced_config_map(namespace).items)


@pytest.mark.parametrize("helm_binary", ["helm", "helm3"])
def test_a_tenant_release_cannot_create_in_read_from_or_borrow_credentials_of_another_namespace(
    helm_binary: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    other_namespace: str,
    chart_repo: ChartRepository,
) -> None:
    deployer = create_service_account(core, namespace, "deployer")
    grant(api_client, namespace, "deployer", (namespace, "deployer"), DEPLOYER_RULES)
    wait_until_allowed(api_client, deployer, namespace, "create", "configmaps")
    create_secret(core, other_namespace, "team-b-pull", {"username": "reader", "password": "team-b-password"})
    before = config_maps(core, other_namespace)
    operator = start_operator("--require-service-account", helm=helm_binary, namespaces=[namespace])
    crossns = {"repository": chart_repo.url, "name": "crossns", "version": "0.1.0"}

    # A template that names B outright.
    create_hr(
        custom,
        namespace,
        helmrelease("plant", crossns, {"into": other_namespace}, serviceAccountName="deployer"),
    )
    # The release itself into B (refused outright under lockdown).
    create_hr(
        custom,
        namespace,
        helmrelease("into-b", crossns, targetNamespace=other_namespace, serviceAccountName="deployer"),
    )
    # B's chart pull secret: a pull secret is a name in the HelmRelease's own namespace, and a namespace given
    # beside it is no field of the API (the API server drops it), so B's Secret is never even looked up.
    borrowed = {**crossns, "chartPullSecret": {"name": "team-b-pull", "namespace": other_namespace}}
    create_hr(custom, namespace, helmrelease("borrow", borrowed, serviceAccountName="deployer"))
    # The same chart, kept at home: it installs, so the refusals above are about B and nothing else.
    create_hr(custom, namespace, helmrelease("home", crossns, serviceAccountName="deployer"))
    wait_for_hr(custom, namespace, "home", ready, operator=operator, what="Ready")
    assert f"{namespace}-home-planted" in config_maps(core, namespace)

    identity = f"system:serviceaccount:{namespace}:deployer"
    hr = wait_for_condition(custom, namespace, "plant", "Released", reason="InstallFailed", operator=operator)
    message = condition(hr, "Released")["message"]
    for part in ("forbidden", identity, other_namespace):
        assert part in message, message
    assert condition(hr, "Ready")["status"] == "False"

    hr = wait_for_hr(
        custom,
        namespace,
        "into-b",
        lambda hr: (
            condition(hr, "Ready").get("status") == "False" and condition(hr, "Released").get("reason")
        ),
        operator=operator,
        what="Ready=False with a reason",
    )
    # Lockdown refuses it before helm runs: a tenant's release goes into its own namespace.
    released = condition(hr, "Released")
    assert released["reason"] == "InvalidSpec", released
    assert released["message"] == (
        f"spec.targetNamespace {other_namespace!r} is not allowed: with multi-tenancy a HelmRelease installs into "
        f"its own namespace ({namespace})"
    )
    assert release_secrets(core, other_namespace, f"{namespace}-{other_namespace}-into-b") == []

    hr = wait_for_condition(custom, namespace, "borrow", "ChartFetched", status="False", operator=operator)
    assert "namespace" not in get_hr(custom, namespace, "borrow")["spec"]["chart"]["chartPullSecret"]
    message = condition(hr, "ChartFetched")["message"]
    assert f"Secret {namespace}/team-b-pull (chart.chartPullSecret) does not exist" in message, message
    assert "team-b-password" not in operator.log()

    assert config_maps(core, other_namespace) == before  # nothing planted in B
    for name in ("plant", "into-b", "borrow"):
        warnings = [event for event in events_for(core, namespace, name) if event[0] == "Warning"]
        assert len(warnings) == 1, (name, warnings)
    assert "Traceback" not in operator.log()
