"""manifests/examples: every HelmRelease parses, uses only fields the CRD declares, and the set covers each source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from helmrelease.api.constants import API_VERSION, KIND
from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.api.spec import GitChartSource, RepoChartSource

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO_ROOT / "manifests" / "examples").glob("*.yaml"))
SCHEMA = YAML(typ="safe").load(REPO_ROOT / "crds" / "helmrelease.yaml")["spec"]["versions"][0]["schema"][
    "openAPIV3Schema"
]
#: The placeholders the tests and the demo replace with the repositories they serve.
PLACEHOLDERS = (
    "https://charts.example.com/",
    "oci://registry.example.com/charts",
    "https://git.example.com/",
)


def helmreleases(path: Path) -> list[dict[str, Any]]:
    documents = [doc for doc in YAML(typ="safe").load_all(path) if doc]
    return [doc for doc in documents if doc.get("kind") == KIND]


ALL = [(path.name, body) for path in EXAMPLES for body in helmreleases(path)]


def undeclared(value: Any, node: dict[str, Any], path: str) -> Iterator[str]:
    """Keys of `value` that the schema `node` does not declare (the apiserver would drop them)."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for key, child in value.items():
            if key not in properties:
                yield f"{path}.{key}"
            else:
                yield from undeclared(child, properties[key], f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from undeclared(item, node["items"], f"{path}[{index}]")


def test_there_are_examples() -> None:
    assert len(ALL) >= 4


@pytest.mark.parametrize(("name", "body"), ALL, ids=[name for name, _ in ALL])
def test_example_is_a_valid_helmrelease(name: str, body: dict[str, Any]) -> None:
    assert body["apiVersion"] == API_VERSION
    release = parse_helmrelease({**body, "metadata": {**body["metadata"], "namespace": "demo"}})
    assert release.release_name
    assert list(undeclared(body["spec"], SCHEMA["properties"]["spec"], "spec")) == []


@pytest.mark.parametrize(("name", "body"), ALL, ids=[name for name, _ in ALL])
def test_example_uses_a_placeholder_the_tests_replace(name: str, body: dict[str, Any]) -> None:
    chart = body["spec"]["chart"]
    location = chart.get("repository") or chart.get("git")
    assert location.startswith(PLACEHOLDERS), f"{name}: {location}"


def test_examples_cover_every_chart_source_and_values_from() -> None:
    releases: list[HelmRelease] = [
        parse_helmrelease({**body, "metadata": {**body["metadata"], "namespace": "demo"}}) for _, body in ALL
    ]
    charts = [release.spec.chart for release in releases]
    assert any(isinstance(chart, RepoChartSource) and not chart.is_oci for chart in charts)
    assert any(isinstance(chart, RepoChartSource) and chart.is_oci for chart in charts)
    assert any(isinstance(chart, GitChartSource) for chart in charts)
    assert any(release.spec.values_from for release in releases)
