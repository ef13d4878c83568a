"""The helm adapter against the real helm v4 and v3 binaries, the control plane and the test chart repository."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.wait import eventually

from helmrelease.adapters import charts, helm

INSTALL, UPGRADE = helm.DeployAction.INSTALL, helm.DeployAction.UPGRADE
# null deletes the chart's default annotation that asks the node simulator for readiness: no rollout ends.
NEVER_READY: dict[str, Any] = {"deploymentAnnotations": None}


@pytest.fixture(params=["v4", "v3"])
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> helm.HelmCommand:
    """The adapter over one real helm binary (the session's `helm` or `helm3` with its private homes)."""
    tool: Helm = request.getfixturevalue("helm" if request.param == "v4" else "helm3")
    settings = helm.HelmSettings(
        home=tool.home,
        temp_root=tmp_path / "private",
        executable=tool.executable,
        kubeconfig=tool.kubeconfig,
        termination_grace=10,
    )
    command = await helm.HelmCommand.detect(settings)
    assert command.major is (helm.HelmMajor.V4 if request.param == "v4" else helm.HelmMajor.V3)
    return command


@pytest.fixture
async def fetch(adapter: helm.HelmCommand, chart_repo: ChartRepository, tmp_path: Path) -> AsyncIterator[Any]:
    fetcher = charts.ChartFetcher(adapter, charts.FetcherSettings(cache_dir=tmp_path / "charts"))

    async def fetch_chart(name: str, version: str) -> charts.FetchedChart:
        return await fetcher.fetch(charts.RepositoryChart(chart_repo.url, name, version))

    yield fetch_chart
    assert list(adapter.settings.temp_root.iterdir()) == [], "private files left behind"


def images(api_client: k8s.ApiClient, namespace: str, name: str) -> list[str]:
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment(name, namespace)
    return [container.image for container in deployment.spec.template.spec.containers]


async def test_install_upgrade_rollback_uninstall(
    adapter: helm.HelmCommand, fetch: Any, namespace: str, api_client: k8s.ApiClient
) -> None:
    old, new = await fetch("app", "0.1.0"), await fetch("app", "0.2.0")

    installed = await adapter.upgrade_install(
        "web", namespace, old.path, {"image": {"tag": "1.1.0"}}, helm.DeployOptions(), action=INSTALL
    )
    assert (installed.revision, installed.status, installed.chart_version) == (1, "deployed", "0.1.0")
    assert "example.invalid/app:1.1.0" in images(api_client, namespace, "web")

    upgraded = await adapter.upgrade_install(
        "web", namespace, new.path, {"message": "two"}, helm.DeployOptions(max_history=5), action=UPGRADE
    )
    assert (upgraded.revision, upgraded.chart_version) == (2, "0.2.0")
    assert await adapter.get_values("web", namespace) == {"message": "two"}  # reset: the old tag is gone
    assert "example.invalid/app:1.0.0" in images(api_client, namespace, "web")
    manifest = await adapter.get_manifest("web", namespace)
    assert sorted(obj["kind"] for obj in manifest) == ["ConfigMap", "Deployment", "Service"]

    await adapter.rollback("web", namespace, helm.RollbackOptions())
    assert await adapter.status("web", namespace) == helm.Release(
        "web", namespace, 3, "deployed", "app", "0.1.0", "1.0.0"
    )
    history = await adapter.history("web", namespace)
    assert [(r.revision, r.status, r.chart) for r in history] == [
        (1, "superseded", "app-0.1.0"),
        (2, "superseded", "app-0.2.0"),
        (3, "deployed", "app-0.1.0"),
    ]

    assert await adapter.uninstall("web", namespace) is True
    assert await adapter.uninstall("web", namespace) is False  # already gone: success
    with pytest.raises(helm.ReleaseNotFound):
        await adapter.status("web", namespace)


async def test_reuse_values_keeps_the_previous_values(
    adapter: helm.HelmCommand, fetch: Any, namespace: str
) -> None:
    chart = await fetch("app", "0.2.0")
    await adapter.upgrade_install(
        "web", namespace, chart.path, {"message": "kept"}, helm.DeployOptions(), action=INSTALL
    )
    options = helm.DeployOptions(reset_values=False)
    await adapter.upgrade_install("web", namespace, chart.path, {"replicas": 2}, options, action=UPGRADE)
    assert await adapter.get_values("web", namespace) == {"message": "kept", "replicas": 2}


@pytest.mark.usefixtures("node_simulator")
async def test_wait_and_tests(adapter: helm.HelmCommand, fetch: Any, namespace: str) -> None:
    """--wait ends once everything is ready (here: a ConfigMap; helm v3's wait needs ReplicaSets nobody makes
    on this control plane); a failing test is an outcome, with the hooks a cleanup would delete."""
    tested = await fetch("tested", "0.1.0")
    options = helm.DeployOptions(wait=True, timeout=60)
    waited = await adapter.upgrade_install("t", namespace, tested.path, {}, options, action=INSTALL)
    assert waited.status == "deployed"
    passed = await adapter.test("t", namespace, timeout_seconds=60)
    assert passed == helm.TestRun(True, "", (helm.TestHook("Pod", "t-test", "Succeeded"),))

    failing = {"testExitCode": 1}
    await adapter.upgrade_install("t", namespace, tested.path, failing, options, action=UPGRADE)
    failed = await adapter.test("t", namespace, timeout_seconds=60)
    assert not failed.passed
    assert "pod t-test failed" in failed.detail
    assert failed.hooks == (helm.TestHook("Pod", "t-test", "Failed"),)


async def test_a_wait_that_runs_out_is_a_timeout(
    adapter: helm.HelmCommand, fetch: Any, namespace: str
) -> None:
    chart = await fetch("app", "0.2.0")
    options = helm.DeployOptions(wait=True, timeout=3)
    with pytest.raises(helm.Timeout, match="context deadline exceeded"):
        await adapter.upgrade_install("web", namespace, chart.path, NEVER_READY, options, action=INSTALL)
    assert (await adapter.status("web", namespace)).status == "failed"


@pytest.mark.parametrize(
    ("release", "values", "action", "target", "error"),
    [
        pytest.param(
            "web", {}, INSTALL, "missing-namespace-x", helm.NamespaceNotFound, id="missing-namespace"
        ),
        pytest.param("web", {"failure": "render"}, INSTALL, None, helm.RenderFailed, id="template-fail"),
        pytest.param(
            "web", {"failure": "apply"}, INSTALL, None, helm.InvalidResource, id="apiserver-rejects"
        ),
        pytest.param("nothing", {}, UPGRADE, None, helm.ReleaseNotFound, id="upgrade-without-release"),
        pytest.param("taken", {}, INSTALL, None, helm.Conflict, id="name-in-use"),
    ],
)
async def test_real_failures_are_typed(
    adapter: helm.HelmCommand,
    fetch: Any,
    namespace: str,
    release: str,
    values: dict[str, Any],
    action: helm.DeployAction,
    target: str | None,
    error: type[helm.HelmError],
) -> None:
    chart = await fetch("app", "0.2.0")
    await adapter.upgrade_install("taken", namespace, chart.path, {}, helm.DeployOptions(), action=INSTALL)
    with pytest.raises(error) as failure:
        await adapter.upgrade_install(
            release, target or namespace, chart.path, values, helm.DeployOptions(), action=action
        )
    assert failure.value.detail
    assert len(failure.value.detail) <= 1000


async def test_impersonation_acts_with_the_service_accounts_rights(
    adapter: helm.HelmCommand, fetch: Any, namespace: str, api_client: k8s.ApiClient
) -> None:
    chart = await fetch("app", "0.2.0")
    tenant = adapter.impersonating(namespace, "default")
    with pytest.raises(helm.Forbidden, match=f"system:serviceaccount:{namespace}:default"):
        await tenant.upgrade_install("web", namespace, chart.path, {}, helm.DeployOptions(), action=INSTALL)

    # The same call succeeds once service accounts of the namespace may manage it: bound to the group, which
    # the apiserver adds to an impersonated service account. (An explicit Role: the aggregated `admin`
    # ClusterRole stays empty without a controller-manager.)
    rbac = k8s.RbacAuthorizationV1Api(api_client)
    everything = k8s.V1PolicyRule(api_groups=["*"], resources=["*"], verbs=["*"])
    rbac.create_namespaced_role(
        namespace, k8s.V1Role(metadata=k8s.V1ObjectMeta(name="tenant-admin"), rules=[everything])
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="tenant-admin"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="tenant-admin"),
            subjects=[
                k8s.RbacV1Subject(
                    kind="Group",
                    name=f"system:serviceaccounts:{namespace}",
                    api_group="rbac.authorization.k8s.io",
                )
            ],
        ),
    )
    await until_allowed(api_client, namespace, f"system:serviceaccount:{namespace}:default")
    installed = await tenant.upgrade_install(
        "web", namespace, chart.path, {}, helm.DeployOptions(), action=INSTALL
    )
    assert installed.status == "deployed"
    with pytest.raises(helm.Forbidden):  # elsewhere the account has no rights
        await tenant.status("web", "default")


async def until_allowed(api_client: k8s.ApiClient, namespace: str, user: str) -> None:
    """Wait until the RBAC authorizer's cache has seen a new binding (it follows the API by a watch)."""
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            resource_attributes=k8s.V1ResourceAttributes(
                namespace=namespace, verb="get", resource="configmaps"
            ),
        )
    )
    authorization = k8s.AuthorizationV1Api(api_client)
    await asyncio.to_thread(
        eventually,
        lambda: authorization.create_subject_access_review(review).status.allowed,
        10,
        f"{user} to get the bound rights",
        interval=0.1,
    )


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def helm_processes(release: str, executable: str) -> list[int]:
    """Running helm processes (from /proc) whose command line names `release`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
            state = (cmdline.parent / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if (
            arguments[0].decode(errors="replace") == executable
            and release.encode() in arguments
            and state != "Z"
        ):
            found.append(int(cmdline.parent.name))
    return found


async def test_cancelling_a_waiting_upgrade_stops_helm_and_removes_the_values(
    adapter: helm.HelmCommand, fetch: Any, namespace: str, core: k8s.CoreV1Api
) -> None:
    chart = await fetch("app", "0.2.0")
    await adapter.upgrade_install(
        "web", namespace, chart.path, NEVER_READY, helm.DeployOptions(), action=INSTALL
    )
    secret_values = {**NEVER_READY, "message": "s3cret"}
    options = helm.DeployOptions(wait=True, timeout=300)
    upgrade = asyncio.create_task(
        adapter.upgrade_install("web", namespace, chart.path, secret_values, options, action=UPGRADE)
    )

    def waiting() -> bool:
        """helm applied the new objects (the ConfigMap says the new message) and waits for the rollout."""
        message = (core.read_namespaced_config_map("web", namespace).data or {}).get("message")
        return message == "s3cret" and bool(helm_processes("web", adapter.settings.executable))

    await asyncio.to_thread(eventually, waiting, 60, "helm to wait for the upgrade's rollout", interval=0.1)
    [values_file] = list(adapter.settings.temp_root.glob("*/values.json"))
    assert stat.S_IMODE(values_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(values_file.parent.stat().st_mode) == 0o700
    pids = helm_processes("web", adapter.settings.executable)

    upgrade.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upgrade
    assert helm_processes("web", adapter.settings.executable) == []
    assert not any(running(pid) for pid in pids)
    assert not values_file.exists()
    # helm got SIGTERM first, so it recorded the upgrade as failed instead of leaving the release locked.
    assert (await adapter.status("web", namespace)).status == "failed"
