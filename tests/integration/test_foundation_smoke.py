"""Every real part at once: CRD, control plane (with RBAC), helm from a chart repo and from OCI, the registry."""

from __future__ import annotations

import datetime as dt

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.registry import ImagePusher, Registry, utc

pytestmark = pytest.mark.usefixtures("crd_installed")


def test_helmrelease_round_trips_through_the_crd(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    body = {
        "apiVersion": "helm.fluxcd.io/v1",
        "kind": "HelmRelease",
        "metadata": {"name": "podinfo"},
        "spec": {
            "releaseName": "podinfo",
            "chart": {"repository": "https://charts.example.invalid/", "name": "podinfo", "version": "6.0.0"},
            "values": {"image": {"repository": "ghcr.io/stefanprodan/podinfo", "tag": "6.0.0"}},
        },
    }
    custom.create_namespaced_custom_object("helm.fluxcd.io", "v1", namespace, "helmreleases", body)
    read = custom.get_namespaced_custom_object("helm.fluxcd.io", "v1", namespace, "helmreleases", "podinfo")
    assert read["spec"]["values"]["image"]["tag"] == "6.0.0"
    patched = custom.patch_namespaced_custom_object_status(
        "helm.fluxcd.io", "v1", namespace, "helmreleases", "podinfo", {"status": {"phase": "Deployed"}}
    )
    assert patched["status"]["phase"] == "Deployed"


def test_rbac_is_enforced(api_client: k8s.ApiClient, core: k8s.CoreV1Api, namespace: str) -> None:
    """A ServiceAccount with no role is denied: authorization is real, not AlwaysAllow."""
    review = k8s.AuthorizationV1Api(api_client).create_subject_access_review(
        k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:default",
                resource_attributes=k8s.V1ResourceAttributes(
                    namespace=namespace, verb="list", resource="secrets"
                ),
            )
        )
    )
    assert review.status.allowed is False


@pytest.mark.parametrize("source", ["repository", "oci"])
def test_helm_installs_a_chart_into_the_control_plane(
    source: str,
    helm: Helm,
    chart_repo: ChartRepository,
    oci_charts: str,
    namespace: str,
    api_client: k8s.ApiClient,
) -> None:
    if source == "repository":
        chart = ["app", "--repo", chart_repo.url, "--version", "0.2.0"]
    else:
        chart = [f"{oci_charts}/app", "--version", "0.2.0", "--plain-http"]
    helm.run("install", "smoke", *chart, "--namespace", namespace, "--set", "image.tag=2.0.0")
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment("smoke", namespace)
    images = [c.image for c in deployment.spec.template.spec.containers]
    assert "example.invalid/app:2.0.0" in images
    status = helm.json("status", "smoke", "--namespace", namespace)
    assert status["info"]["status"] == "deployed"
    [listed] = helm.json("list", "--namespace", namespace)
    assert listed["chart"] == "app-0.2.0"


def test_chart_with_crds_installs_its_crd(
    helm: Helm, chart_repo: ChartRepository, namespace: str, custom: k8s.CustomObjectsApi
) -> None:
    helm.run("install", "widgets", "withcrd", "--repo", chart_repo.url, "--namespace", namespace)
    widget = custom.get_namespaced_custom_object(
        "test.helmrelease.dev", "v1", namespace, "widgets", "widgets"
    )
    assert widget["spec"]["size"] == 3


def test_registry_lists_pushed_tags_with_real_creation_times(pusher: ImagePusher, registry: Registry) -> None:
    repository = "smoke/app"
    for age, tag in ((30, "1.0.0"), (20, "1.1.0"), (10, "1.2.0")):
        pusher.push(repository, tag, created=utc(age))
    pusher.push(repository, "multi", created=utc(5), platforms=(("linux", "amd64"), ("linux", "arm64")))
    assert sorted(pusher.tags(repository)) == ["1.0.0", "1.1.0", "1.2.0", "multi"]
    manifest = pusher.session.get(
        f"{registry.url}/v2/{repository}/manifests/1.1.0",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    ).json()
    config = pusher.session.get(
        f"{registry.url}/v2/{repository}/blobs/{manifest['config']['digest']}", timeout=10
    ).json()
    created = dt.datetime.fromisoformat(config["created"].replace("Z", "+00:00"))
    assert abs((created - utc(20)).total_seconds()) < 60


def test_authenticated_registry_refuses_anonymous_and_accepts_credentials(auth_registry: Registry) -> None:
    import requests

    assert requests.get(f"{auth_registry.url}/v2/", timeout=5).status_code == 401
    authed = ImagePusher(auth_registry)
    authed.push("private/app", "1.0.0")
    assert authed.tags("private/app") == ["1.0.0"]


def test_helm3_is_available_for_compatibility(
    helm3: Helm, chart_repo: ChartRepository, namespace: str
) -> None:
    assert helm3.version().startswith("v3.")
    helm3.run("install", "smoke3", "app", "--repo", chart_repo.url, "--namespace", namespace)
    assert helm3.json("status", "smoke3", "--namespace", namespace)["info"]["status"] == "deployed"


def test_namespace_fixture_is_isolated(namespace: str, core: k8s.CoreV1Api) -> None:
    assert core.read_namespace(namespace).metadata.labels["helmrelease-test"] == "1"
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("nothing-here", namespace)
