"""Fixtures for the whole suite. Integration fixtures start real components on loopback, once per session.

Set HELMRELEASE_TEST_KUBECONFIG (and optionally HELMRELEASE_TEST_CONTEXT) to run against an existing test cluster
instead of the local control plane; a guard refuses contexts that do not look like test clusters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from helmrelease.api import bounded_json
from helmrelease.api.constants import GROUP, PLURAL, VERSION
from tests.support import charts as charts_mod
from tests.support import cluster as cluster_mod
from tests.support import controlplane as controlplane_mod
from tests.support import registry as registry_mod
from tests.support.helmtool import Helm
from tests.support.operator import Operator, StartOperator
from tests.support.procs import REPO_ROOT

CRD_PATH = REPO_ROOT / "crds" / "helmrelease.yaml"
#: kopf's own peering CRDs (KopfPeering, ClusterKopfPeering), which `--peering` needs: kopf ships them, not our chart.
PEERING_CRDS = REPO_ROOT / "tests" / "fixtures" / "kopf-peering-crds.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path) or "tests/bench" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helmrelease-it")


@pytest.fixture(scope="session")
def kubeconfig(workdir: Path) -> Iterator[Path]:
    """A kubeconfig for a test cluster: the local etcd + kube-apiserver, or the guarded existing one."""
    existing = cluster_mod.existing_cluster_from_env()
    if existing is not None:
        os.environ["KUBECONFIG"] = str(existing.kubeconfig)
        yield existing.kubeconfig
        return
    plane = controlplane_mod.start(workdir / "controlplane")
    print(f"\ncontrol plane ready in {plane.started_in:.1f}s at {plane.server}")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield plane.kubeconfig
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def core(api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def crd_installed(api_client: k8s.ApiClient, kubeconfig: Path) -> None:
    """Apply crds/ with kubectl (server-side) and wait until the HelmRelease type is served."""
    from tests.support.kubectl import kubectl

    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    kubectl(
        kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd/helmreleases.helm.fluxcd.io"
    )


@pytest.fixture(scope="session")
def peering_crds(kubeconfig: Path, crd_installed: None) -> None:
    """kopf's peering CRDs, applied and served (for operators run with `--peering`)."""
    from tests.support.kubectl import kubectl

    kubectl(kubeconfig, "apply", "--server-side", "-f", str(PEERING_CRDS))
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


@pytest.fixture
def namespace(
    core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace per test (with the `default` ServiceAccount a controller-manager would have made).

    Teardown strips finalizers left on HelmReleases (a test may stop the operator before it finishes) and finalizes
    the namespace itself, since there is no namespace controller to do it.
    """
    base = request.node.name.lower().replace("_", "-")
    # Short: default release names are <namespace>-<name> and Helm allows 53 characters.
    name = "".join(c for c in base.removeprefix("test-") if c.isalnum() or c == "-")[:24].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"helmrelease-test": "1"}))
    )
    core.create_namespaced_service_account(
        name, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
    )
    yield name
    with contextlib.suppress(ApiException):
        # Undecoded by the client and decoded bounded: a test may leave HelmReleases nested 10,000 deep.
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL, _preload_content=False)
        releases = bounded_json.loads(listed.data)
        for item in releases.get("items", []):
            if item["metadata"].get("finalizers"):
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    name,
                    PLURAL,
                    item["metadata"]["name"],
                    [{"op": "remove", "path": "/metadata/finalizers"}],
                    _content_type="application/json-patch+json",
                    _preload_content=False,
                )
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)
        core.replace_namespace_finalize(
            name,
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name), spec=k8s.V1NamespaceSpec(finalizers=[])),
        )


@pytest.fixture(scope="session")
def helm_home(workdir: Path) -> Path:
    home = workdir / "helm"
    os.environ.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return home


@pytest.fixture(scope="session")
def helm(helm_home: Path, kubeconfig: Path) -> Helm:
    """helm v4, the default the operator runs."""
    return Helm.create("helm", helm_home / "v4", kubeconfig)


@pytest.fixture(scope="session")
def helm3(helm_home: Path, kubeconfig: Path) -> Helm:
    """helm v3, for compatibility tests."""
    return Helm.create("helm3", helm_home / "v3", kubeconfig)


@pytest.fixture(scope="session")
def registry(workdir: Path) -> Iterator[registry_mod.Registry]:
    """An anonymous OCI registry (images and OCI charts)."""
    reg = registry_mod.start(workdir / "registry")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(workdir: Path) -> Iterator[registry_mod.Registry]:
    """An OCI registry behind htpasswd basic auth."""
    reg = registry_mod.start(workdir / "registry-auth", username="robot", password=uuid.uuid4().hex)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def pusher(registry: registry_mod.Registry) -> registry_mod.ImagePusher:
    return registry_mod.ImagePusher(registry)


@pytest.fixture(scope="session")
def chart_repo(helm: Helm, workdir: Path) -> Iterator[charts_mod.ChartRepository]:
    """Every chart under tests/charts at every version in charts.VERSIONS, served as a Helm repository."""
    repo = charts_mod.serve_repository(helm, workdir / "chart-repo")
    yield repo
    repo.stop()


@pytest.fixture(scope="session")
def oci_charts(helm: Helm, registry: registry_mod.Registry, chart_repo: charts_mod.ChartRepository) -> str:
    """The same charts pushed to the registry; returns `oci://<host>/charts`."""
    return charts_mod.push_oci_charts(helm, registry, chart_repo.directory)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_tmp(workdir: Path) -> Iterator[None]:
    yield
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def node_simulator(api_client: k8s.ApiClient) -> Iterator[object]:
    """Completes helm test Pods in test namespaces (no kubelet here); see tests/support/nodesim.py."""
    from tests.support.nodesim import NodeSimulator

    sim = NodeSimulator(api_client).start()
    yield sim
    sim.stop()


@pytest.fixture
def start_operator(workdir: Path, kubeconfig: Path, namespace: str) -> Iterator[StartOperator]:
    """Start real operator processes watching the test's namespace; all are stopped at teardown."""
    started: list[Operator] = []

    def start(
        *extra_args: str,
        helm: str = "helm",
        resync_interval: float = 300,
        namespaces: list[str] | None = None,
        through: Path | None = None,
    ) -> Operator:
        """`through`: a kubeconfig of its own (an API server behind a proxy the test can cut)."""
        operator = Operator(
            workdir / namespace,
            through or kubeconfig,
            namespaces or [namespace],
            helm=helm,
            resync_interval=resync_interval,
            extra_args=extra_args,
        ).start()
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()
