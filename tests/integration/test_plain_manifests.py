"""manifests/plain/: the chart rendered by `helm template`, kept current, kustomize-able, accepted by the API server."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from ruamel.yaml import YAML
from tests.support.docs import DOCS_DIR, blocks
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.plain_manifests import (
    FILES,
    NAMESPACE,
    PLAIN_DIR,
    REGENERATE,
    committed,
    render,
    split,
    template,
)

FIELD_MANAGER = "helmrelease-plain-manifests-test"


def load_all(text: str) -> list[dict[str, Any]]:
    return [document for document in YAML(typ="safe").load_all(text) if document]


def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj["metadata"]
    return obj["apiVersion"], obj["kind"], metadata.get("namespace", ""), metadata["name"]


def test_the_committed_plain_manifests_are_the_chart_rendered_now(helm: Helm) -> None:
    files = render(helm)
    assert committed() == files, (
        f"manifests/plain/ is out of date with the chart: run `{REGENERATE}` and commit it"
    )


def test_every_object_the_chart_renders_is_in_exactly_one_file_listed_by_the_kustomization(
    helm: Helm,
) -> None:
    rendered = template(helm)
    files = split(rendered)
    listed = YAML(typ="safe").load(files["kustomization.yaml"])["resources"]
    assert sorted(listed) == sorted(name for name in files if name != "kustomization.yaml")
    objects = [obj for name in listed for obj in load_all(files[name])]
    assert sorted(map(identity, objects)) == sorted(
        [*map(identity, load_all(rendered)), ("v1", "Namespace", "", NAMESPACE)]
    )
    kinds = {obj["kind"] for obj in objects}
    assert {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "Deployment"} <= kinds
    assert all(FILES.get(obj["kind"]) for obj in objects), "every kind the chart renders has its file"


def test_kustomize_builds_the_same_objects(kubeconfig: Path) -> None:
    built = load_all(kubectl(kubeconfig, "kustomize", str(PLAIN_DIR)))
    expected = [
        obj for name, text in committed().items() if name != "kustomization.yaml" for obj in load_all(text)
    ]
    assert sorted(map(identity, built)) == sorted(map(identity, expected))


@pytest.fixture
def flux_namespace(core: k8s.CoreV1Api) -> Iterator[str]:
    """The namespace the plain manifests install into, made for the test unless it exists (and then left alone)."""
    created = False
    try:
        core.read_namespace(NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        created = True
    yield NAMESPACE
    if created:
        with contextlib.suppress(ApiException):
            core.delete_namespace(NAMESPACE)
            core.replace_namespace_finalize(
                NAMESPACE,
                k8s.V1Namespace(
                    metadata=k8s.V1ObjectMeta(name=NAMESPACE), spec=k8s.V1NamespaceSpec(finalizers=[])
                ),
            )


def test_the_api_server_accepts_every_object(kubeconfig: Path, flux_namespace: str) -> None:
    """A server-side dry run of `kubectl apply -k`: admission, validation and RBAC escalation checks, no writes."""
    output = kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "--dry-run=server",
        "-k",
        str(PLAIN_DIR),
    )
    applied = {line.split(" ")[0] for line in output.splitlines() if line.strip()}
    expected = {
        f"{obj['kind'].lower()}.{group}/{obj['metadata']['name']}"
        if group
        else f"{obj['kind'].lower()}/{obj['metadata']['name']}"
        for name, text in committed().items()
        if name != "kustomization.yaml"
        for obj in load_all(text)
        for group in [obj["apiVersion"].rpartition("/")[0]]
    }
    assert applied == expected, output


def test_the_overlay_in_the_quick_start_builds(kubeconfig: Path, tmp_path: Path) -> None:
    """The kustomize overlay the quick start shows: its image and its patch land where it says, on both containers'
    image and on the operator's arguments."""
    [overlay] = [
        block
        for block in blocks(DOCS_DIR / "quickstart.md")
        if block.language == "yaml" and "kind: Kustomization" in block.text
    ]
    assert overlay.text.startswith("# my-overlay/kustomization.yaml")
    # Laid out as the block says, beside a copy of manifests/ (kustomize refuses absolute paths to a base).
    shutil.copytree(PLAIN_DIR, tmp_path / "manifests" / "plain")
    (tmp_path / "my-overlay").mkdir()
    (tmp_path / "my-overlay" / "kustomization.yaml").write_text(overlay.text)
    built = load_all(kubectl(kubeconfig, "kustomize", str(tmp_path / "my-overlay")))
    expected = [
        obj for name, text in committed().items() if name != "kustomization.yaml" for obj in load_all(text)
    ]
    assert sorted(map(identity, built)) == sorted(map(identity, expected))
    [deployment] = [obj for obj in built if obj["kind"] == "Deployment"]
    operator, sidecar = deployment["spec"]["template"]["spec"]["containers"]
    assert (operator["name"], operator["args"][-1]) == ("operator", "--no-adopt")
    assert "--no-adopt" not in sidecar["args"]
    assert operator["image"] == sidecar["image"] == "registry.example.com/mirror/helmrelease-operator:0.1.0"
