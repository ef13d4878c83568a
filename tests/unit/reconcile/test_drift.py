"""Drift detection: what counts as a user's change to a release's objects, and what is the apiserver's doing."""

from __future__ import annotations

from typing import Any

import pytest

from helmrelease.reconcile.drift import ManifestObject, find_drift, parse_manifest

MANIFEST = """\
---
# Source: app/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  message: "hello"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: other
  labels: {app: web}
spec:
  replicas: 1
  template:
    spec:
      containers:
        - name: app
          image: example/app:1.0.0
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, targetPort: 8080}]
"""


def _objects() -> dict[str, ManifestObject]:
    return {obj.kind: obj for obj in parse_manifest(MANIFEST, "apps")}


def test_parse_manifest_fills_the_release_namespace_and_keeps_explicit_ones() -> None:
    objects = parse_manifest(MANIFEST, "apps")
    assert [(o.kind, o.name, o.namespace) for o in objects] == [
        ("ConfigMap", "web", "apps"),
        ("Deployment", "web", "other"),
        ("Service", "web", "apps"),
    ]


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param("", id="empty"),
        pytest.param("---\n# only a comment\n", id="comment-only"),
        pytest.param("- a list\n", id="not-a-mapping"),
        pytest.param("kind: ConfigMap\nmetadata: {name: x}\n", id="no-apiVersion"),
        pytest.param("a: [unclosed\n", id="broken-yaml"),
        pytest.param("apiVersion: v1\nkind: List\nmetadata: {name: x}\nitems: []\n", id="list-kind"),
    ],
)
def test_parse_manifest_skips_what_is_not_an_object(manifest: str) -> None:
    assert parse_manifest(manifest, "ns") == []


def _live(kind: str, **changes: Any) -> dict[str, Any]:
    """The live object as an apiserver returns it: the manifest plus defaults, status and metadata."""
    import copy

    body = copy.deepcopy(dict(_objects()[kind].body))
    body.setdefault("metadata", {}).update(
        {
            "resourceVersion": "42",
            "uid": "u",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [],
        }
    )
    body["metadata"].setdefault("annotations", {})["helm.fluxcd.io/antecedent"] = "apps:helmrelease/web"
    body["status"] = {"observed": True}
    if kind == "Deployment":
        container = body["spec"]["template"]["spec"]["containers"][0]
        container["terminationMessagePath"] = "/dev/termination-log"
        container["ports"][0]["protocol"] = "TCP"
        body["spec"]["strategy"] = {"type": "RollingUpdate"}
    for dotted, value in changes.items():
        target = body
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(
    ("kind", "changes", "expected"),
    [
        pytest.param("ConfigMap", {}, None, id="unchanged-configmap"),
        pytest.param("Deployment", {}, None, id="defaults-and-status-are-not-drift"),
        pytest.param("Service", {}, None, id="unchanged-service"),
        pytest.param("ConfigMap", {"data__message": "edited"}, (".data.message",), id="edited-data"),
        pytest.param("ConfigMap", {"data__extra": "added"}, None, id="added-key-is-not-drift"),
        pytest.param("ConfigMap", {"data": _DELETE}, (".data",), id="removed-data"),
        pytest.param("Deployment", {"spec__replicas": 3}, (".spec.replicas",), id="scaled"),
        pytest.param(
            "Deployment",
            {"spec__template__spec__containers__0__image": "example/app:hacked"},
            (".spec.template.spec.containers[0].image",),
            id="edited-image",
        ),
        pytest.param(
            "Deployment",
            {"spec__template__spec__containers": []},
            (".spec.template.spec.containers",),
            id="containers-removed",
        ),
        pytest.param(
            "Deployment", {"metadata__labels": {"app": "x"}}, (".metadata.labels.app",), id="label-edited"
        ),
        pytest.param("Service", {"spec__ports__0__port": "80"}, None, id="int-or-string-port"),
    ],
)
def test_find_drift(kind: str, changes: dict[str, Any], expected: tuple[str, ...] | None) -> None:
    drift = find_drift(_objects()[kind], _live(kind, **changes))
    assert (drift.paths if drift else None) == expected


def test_missing_object_is_drift() -> None:
    drift = find_drift(_objects()["ConfigMap"], None)
    assert drift is not None
    assert drift.missing
    assert drift.describe() == "ConfigMap apps/web is missing"


@pytest.mark.parametrize(
    "annotation", ["helm.fluxcd.io/driftDetection", "helm.toolkit.fluxcd.io/driftDetection"]
)
def test_opt_out_annotation(annotation: str) -> None:
    live = _live("ConfigMap", data__message="edited")
    live["metadata"]["annotations"][annotation] = "disabled"
    assert find_drift(_objects()["ConfigMap"], live) is None


def test_describe_lists_paths() -> None:
    drift = find_drift(_objects()["Deployment"], _live("Deployment", spec__replicas=2))
    assert drift is not None
    assert drift.describe() == "Deployment other/web changed at .spec.replicas"


def test_a_manifest_whose_aliases_never_end_is_not_compared() -> None:
    """Helm itself refuses such a manifest; should one be stored, drift detection skips it rather than walk it."""
    laughs = "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n" + laughs
    assert parse_manifest(manifest, "apps") == []
