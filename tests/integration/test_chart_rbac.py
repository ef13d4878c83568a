"""The operator chart's RBAC, installed, is all the real operator needs: it runs a whole lifecycle as that identity.

``helm template`` renders the chart in multi-tenant mode (one watched namespace, every release as its own
ServiceAccount, no cluster-admin); its ServiceAccount, ClusterRole, Role and bindings are applied to the test
cluster; a token minted for that ServiceAccount (TokenRequest) goes into a kubeconfig of its own, and the real
operator, with helm, runs on it: install, upgrade, uninstall of a tenant's release. The operator's identity may read
Secrets there (values sources, chart credentials, helm's storage index) but write or delete none: helm writes its
storage as the tenant. With `operator.peering.name` too, the same identity runs a peered operator: its kopf
peering keep-alives and its claims on releases (Leases) need nothing the chart does not grant. docs/operating.md
("RBAC") gives every rule and why.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from ruamel.yaml import YAML
from tests.integration.test_operator_chart import CHART
from tests.integration.test_replicas import peers, slow
from tests.integration.test_tenancy import DEPLOYER_RULES
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    StartOperator,
    create_hr,
    delete_and_wait_gone,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.rbac import allowed, create_service_account, grant, wait_until_allowed
from tests.support.wait import eventually

from helmrelease.reconcile.plan import CLAIM_DURATION, claim_lease_name

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@contextlib.contextmanager
def applied_chart(
    helm: Helm, kubeconfig: Path, namespace: str, tmp_path: Path, kinds: tuple[str, ...], *assignments: str
) -> Iterator[str]:
    """The objects of `kinds` that the chart renders with `assignments` (`--set`) for a release in `namespace`,
    applied; yields the user name of its ServiceAccount. Cluster-scoped objects are deleted afterwards (they
    outlive the namespace)."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    settings = [arg for assignment in assignments for arg in ("--set", assignment)]
    rendered = helm.run("template", release, str(CHART), "--namespace", namespace, *settings).stdout
    documents = [doc for doc in YAML(typ="safe").load_all(rendered) if doc and doc["kind"] in kinds]
    assert sorted(doc["kind"] for doc in documents) == sorted(kinds)
    manifest = tmp_path / "rbac.yaml"
    with manifest.open("w") as stream:
        YAML(typ="safe").dump_all(documents, stream)
    kubectl(kubeconfig, "apply", "-f", str(manifest))
    [account] = [doc["metadata"]["name"] for doc in documents if doc["kind"] == "ServiceAccount"]
    try:
        yield account
    finally:
        for doc in documents:
            if doc["kind"].startswith("Cluster"):
                kubectl(
                    kubeconfig, "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found"
                )


@pytest.fixture
def chart_rbac(helm: Helm, kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[str]:
    """The chart's RBAC objects for a multi-tenant install watching `namespace`, applied; yields the user name of
    its ServiceAccount."""
    with applied_chart(
        helm,
        kubeconfig,
        namespace,
        tmp_path,
        RBAC_KINDS,
        f"watchNamespaces={{{namespace}}}",
        "operator.requireServiceAccount=true",
        "rbac.clusterAdmin=false",
    ) as account:
        yield account


def token_kubeconfig(kubeconfig: Path, token: str, path: Path) -> Path:
    """`kubeconfig`'s cluster and context, authenticated by `token` instead of the admin certificate."""
    config: dict[str, Any] = YAML(typ="safe").load(kubeconfig)
    for user in config["users"]:
        user["user"] = {"token": token}
    with path.open("w") as stream:
        YAML(typ="safe").dump(config, stream)
    return path


def test_the_operator_passes_the_lifecycle_with_only_the_charts_rbac(
    start_operator: StartOperator,
    chart_rbac: str,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    kubeconfig: Path,
    namespace: str,
    chart_repo: ChartRepository,
    tmp_path: Path,
) -> None:
    account = chart_rbac
    user = f"system:serviceaccount:{namespace}:{account}"
    wait_until_allowed(api_client, user, namespace, "patch", "helmreleases", group=GROUP)
    # Multi-tenant: the operator's own identity reads Secrets and never writes one; no cluster-admin.
    assert allowed(api_client, user, namespace, "list", "secrets")
    for verb in ("create", "update", "patch", "delete"):
        assert not allowed(api_client, user, namespace, verb, "secrets"), verb
    assert not allowed(api_client, user, namespace, "create", "configmaps")
    assert not allowed(api_client, user, "default", "get", "secrets")
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    as_chart = token_kubeconfig(kubeconfig, token, tmp_path / "chart-identity.kubeconfig")

    deployer = create_service_account(core, namespace, "deployer")
    grant(api_client, namespace, "deployer", (namespace, "deployer"), DEPLOYER_RULES)
    wait_until_allowed(api_client, deployer, namespace, "create", "configmaps")
    operator = start_operator("--require-service-account", through=as_chart)
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    create_hr(
        custom, namespace, helmrelease("life", chart, {"message": "one"}, serviceAccountName="deployer")
    )
    wait_for_hr(custom, namespace, "life", ready, operator=operator, what="installed")
    release = f"{namespace}-life"
    assert core.read_namespaced_config_map(release, namespace).data["message"] == "one"

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "life", {"spec": {"values": {"message": "two"}}}
    )
    hr = wait_for_hr(
        custom,
        namespace,
        "life",
        lambda hr: ready(hr) and hr["status"].get("helmRevision") == 2,
        operator=operator,
        what="upgraded to revision 2",
    )
    assert hr["status"]["releaseStatus"] == "deployed"
    assert core.read_namespaced_config_map(release, namespace).data["message"] == "two"
    storage = core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    assert len(storage) == 2

    delete_and_wait_gone(custom, namespace, "life", operator=operator, timeout=120)
    assert core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items == []
    with contextlib.suppress(ApiException):
        core.read_namespaced_config_map(release, namespace)
        raise AssertionError("the release's ConfigMap outlived the uninstall")
    log = operator.log()
    assert "Traceback" not in log, log
    assert "forbidden" not in log.lower(), log


PEERING = "ops"


@pytest.fixture
def peered_chart_rbac(
    helm: Helm, kubeconfig: Path, namespace: str, tmp_path: Path, peering_crds: None
) -> Iterator[str]:
    """The chart's RBAC for a multi-tenant install watching `namespace` with peering on, and the KopfPeering it
    renders there, applied; yields the user name of its ServiceAccount."""
    with applied_chart(
        helm,
        kubeconfig,
        namespace,
        tmp_path,
        (*RBAC_KINDS, "KopfPeering"),
        f"watchNamespaces={{{namespace}}}",
        "operator.requireServiceAccount=true",
        "rbac.clusterAdmin=false",
        f"operator.peering.name={PEERING}",
    ) as account:
        yield account


def test_a_peered_operator_claims_releases_with_only_the_charts_rbac(
    start_operator: StartOperator,
    peered_chart_rbac: str,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    kubeconfig: Path,
    namespace: str,
    chart_repo: ChartRepository,
    tmp_path: Path,
) -> None:
    """With `operator.peering.name` (multi-tenant, as above) the real operator, as the chart's ServiceAccount,
    keeps its place in kopf's KopfPeering and claims the release it installs: it creates the claim's Lease, renews
    it while `helm --wait` runs (longer than the renewal interval) and deletes it at the end of the pass. Red
    without the chart's rule for leases: the claim cannot be taken, and nothing is installed."""
    account = peered_chart_rbac
    user = f"system:serviceaccount:{namespace}:{account}"
    wait_until_allowed(api_client, user, namespace, "patch", "kopfpeerings", group="kopf.dev")
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    as_chart = token_kubeconfig(kubeconfig, token, tmp_path / "chart-identity.kubeconfig")
    deployer = create_service_account(core, namespace, "deployer")
    grant(api_client, namespace, "deployer", (namespace, "deployer"), DEPLOYER_RULES)
    wait_until_allowed(api_client, deployer, namespace, "create", "configmaps")
    operator = start_operator(
        "--require-service-account", "--peering", PEERING, "--priority", "1", through=as_chart
    )
    eventually(
        lambda: bool(peers(custom, namespace)),
        60,
        "the operator to announce itself in the KopfPeering",
        context=operator.tail,
    )

    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    # Ready only after longer than a claim's renewal interval (a third of its duration): helm --wait holds so long.
    held = int(CLAIM_DURATION / 3) + 10
    create_hr(
        custom,
        namespace,
        helmrelease(
            "claimed", chart, slow("one", held), wait=True, timeout=300, serviceAccountName="deployer"
        ),
    )
    release = f"{namespace}-claimed"
    leases = k8s.CoordinationV1Api(api_client)

    def claim() -> k8s.V1Lease | None:
        found: list[k8s.V1Lease] = [
            lease
            for lease in leases.list_namespaced_lease(namespace).items
            if lease.metadata.name == claim_lease_name(release)
        ]
        return found[0] if found else None

    taken = eventually(claim, 60, "the operator to claim the release", interval=0.2, context=operator.tail)
    assert taken.spec.holder_identity, taken
    first = taken.spec.renew_time
    eventually(
        lambda: (lease := claim()) is not None and lease.spec.renew_time > first,
        CLAIM_DURATION,
        "the operator to renew its claim while helm runs",
        context=operator.tail,
    )
    wait_for_hr(custom, namespace, "claimed", ready, operator=operator, what="installed")
    eventually(lambda: claim() is None, 30, "the claim to be deleted after the pass", context=operator.tail)
    assert core.read_namespaced_config_map(release, namespace).data["message"] == "one"
    log = operator.log()
    assert "Traceback" not in log, log
    assert "forbidden" not in log.lower(), log
