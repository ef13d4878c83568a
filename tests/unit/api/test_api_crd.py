"""crds/helmrelease.yaml: a structural schema, the contract's names and columns, and in step with the models.

The apiserver prunes fields a structural schema does not declare, so a status field the models write but the CRD
lacks would silently vanish; these tests compare the two field by field. (The apiserver itself accepting the CRD
and enforcing its rules is an integration test.)
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML

from helmrelease.api.constants import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
    PLURAL,
    Action,
    Phase,
)
from helmrelease.api.errors import SpecError
from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.api.spec import NAMESPACE_PATTERN, OBJECT_NAME_PATTERN, ChartFileSelector, HelmReleaseSpec
from helmrelease.api.status import HelmReleaseStatus

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD: dict[str, Any] = YAML(typ="safe").load(REPO_ROOT / "crds" / "helmrelease.yaml")
(VERSION,) = CRD["spec"]["versions"]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
STATUS = SCHEMA["properties"]["status"]


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node`, with a readable path."""
    yield path or "(root)", node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}{{}}")


def test_names_and_version() -> None:
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    names = CRD["spec"]["names"]
    assert (CRD["spec"]["group"], names["kind"], names["plural"], names["singular"]) == (
        GROUP,
        KIND,
        PLURAL,
        "helmrelease",
    )
    assert names["shortNames"] == ["hr", "hrs"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == ("v1", True, True)
    assert f"{GROUP}/{VERSION['name']}" == API_VERSION
    assert VERSION["subresources"] == {"status": {}}


@pytest.mark.parametrize(("path", "node"), list(nodes(SCHEMA)), ids=[path for path, _ in nodes(SCHEMA)])
def test_every_node_is_structural(path: str, node: dict[str, Any]) -> None:
    assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields") is True, f"{path} has no type"
    assert "$ref" not in node
    assert not ({"properties", "additionalProperties"} <= set(node)), f"{path} mixes properties kinds"
    if node.get("type") == "array":
        assert "items" in node, f"{path} is an array without items"
    for rule in node.get("x-kubernetes-validations", []):
        assert rule["rule"].strip()
        assert rule["message"].strip()


def test_metadata_is_left_to_the_apiserver() -> None:
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize(
    ("path", "node"), list(nodes(SPEC, "spec")), ids=[path for path, _ in nodes(SPEC, "spec")]
)
def test_every_spec_field_explains_itself(path: str, node: dict[str, Any]) -> None:
    """`kubectl explain helmrelease.spec...` prints these."""
    assert len(node.get("description", "")) > 10, f"{path} has no description"


def test_printer_columns_of_the_contract_plus_ready() -> None:
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        ("Release", "string", ".status.releaseName"),
        ("Phase", "string", ".status.phase"),
        ("ReleaseStatus", "string", ".status.releaseStatus"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Message", "string", '.status.conditions[?(@.type=="Released")].message'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_rules_reject_what_can_never_work() -> None:
    chart_rules = [rule["rule"] for rule in SPEC["properties"]["chart"]["x-kubernetes-validations"]]
    assert chart_rules == [
        "has(self.repository) != has(self.git)",
        "!has(self.repository) || (has(self.name) && has(self.version))",
        "!has(self.git) || has(self.path)",
    ]
    (item_rule,) = SPEC["properties"]["valuesFrom"]["items"]["x-kubernetes-validations"]
    for source in ("configMapKeyRef", "secretKeyRef", "externalSourceRef", "chartFileRef"):
        assert f"has(self.{source})" in item_rule["rule"]
    timeouts = [path for path, node in nodes(SPEC, "spec") if path.endswith("timeout")]
    assert timeouts == ["spec.timeout", "spec.rollback.timeout", "spec.test.timeout"]
    for path, node in nodes(SPEC, "spec"):
        if path.endswith("timeout"):
            assert (node["minimum"], node["maximum"]) == (MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS), path
        if path.endswith(("maxHistory", "maxRetries")):
            assert node["minimum"] == 0, path


@pytest.mark.parametrize("field", ["timeout", "rollback.timeout", "test.timeout"])
@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        pytest.param(MIN_TIMEOUT_SECONDS - 1, False, id="zero-would-wait-forever"),
        pytest.param(MIN_TIMEOUT_SECONDS, True, id="minimum"),
        pytest.param(MAX_TIMEOUT_SECONDS, True, id="maximum"),
        pytest.param(MAX_TIMEOUT_SECONDS + 1, False, id="beyond-a-day"),
        pytest.param(10**12, False, id="absurd"),
    ],
)
def test_models_enforce_the_crd_timeout_bounds(field: str, value: int, accepted: bool) -> None:
    """Objects stored before the CRD had bounds reach the parser: it refuses the same values, naming the field."""
    spec: dict[str, Any] = {"chart": {"git": "g", "path": "p"}}
    *parents, leaf = field.split(".")
    target = spec
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = value
    try:
        parse_helmrelease({"metadata": {"name": "x"}, "spec": spec})
    except SpecError as error:
        assert not accepted
        assert [problem.field for problem in error.problems] == [f"spec.{field}"]
    else:
        assert accepted


def test_lists_with_rules_are_bounded() -> None:
    """CEL cost is estimated from the largest possible list; unbounded lists exceed the apiserver's budget."""
    for path, node in nodes(SPEC, "spec"):
        if node.get("type") == "array" and "x-kubernetes-validations" in node.get("items", {}):
            assert node.get("maxItems"), path


def test_values_keep_any_shape() -> None:
    assert SPEC["properties"]["values"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": SPEC["properties"]["values"]["description"],
    }


def test_status_enums_match_the_models() -> None:
    properties = STATUS["properties"]
    assert properties["phase"]["enum"] == [phase.value for phase in Phase]
    assert properties["lastAction"]["enum"] == [action.value for action in Action if action.runs_helm]
    assert properties["conditions"]["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert properties["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_kopf_may_store_its_progress() -> None:
    assert STATUS["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


# ---------------------------------------------------------------------------------------------------------------
# The models and the schema declare the same fields.


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation refers to, through unions, Annotated, tuples and lists."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        found.extend(_models_in(argument))
    return found


def _compare(models: list[type[BaseModel]], node: dict[str, Any], path: str) -> Iterator[str]:
    """Mismatches between the fields of `models` (merged, for unions) and the schema node's properties."""
    fields = {(info.alias or name): info for model in models for name, info in model.model_fields.items()}
    declared = set(node.get("properties", {}))
    for missing in sorted(set(fields) - declared):
        yield f"{path}.{missing}: in the models, not in the CRD"
    for extra in sorted(declared - set(fields) - {"kopf"}):
        yield f"{path}.{extra}: in the CRD, not in the models"
    required_by_crd = set(node.get("required", []))
    required_by_models = {alias for alias, info in fields.items() if info.is_required()}
    for loose in sorted(required_by_crd - required_by_models):
        yield f"{path}.{loose}: required by the CRD, optional in the models"
    for alias, info in fields.items():
        children = _models_in(info.annotation)
        if children and alias in declared:
            child = node["properties"][alias]
            yield from _compare(children, child.get("items", child), f"{path}.{alias}")


@pytest.mark.parametrize(
    ("model", "node", "path"),
    [
        pytest.param(HelmReleaseSpec, SPEC, "spec", id="spec"),
        pytest.param(HelmReleaseStatus, STATUS, "status", id="status"),
    ],
)
def test_models_and_schema_declare_the_same_fields(
    model: type[BaseModel], node: dict[str, Any], path: str
) -> None:
    assert list(_compare([model], node, path)) == []


def test_the_comparison_sees_nested_models() -> None:
    """Guard for the test above: it must descend into unions and lists, or it would pass vacuously."""
    seen = set(_walk_names(HelmReleaseSpec))
    assert {
        "chartPullSecret",
        "secretRef",
        "skipDepUpdate",
        "configMapKeyRef",
        "maxRetries",
        "ignoreFailures",
    } <= seen


def _walk_names(model: type[BaseModel]) -> Iterator[str]:
    for name, info in model.model_fields.items():
        yield info.alias or name
        for child in _models_in(info.annotation):
            yield from _walk_names(child)


# ---------------------------------------------------------------------------------------------------------------
# The schema's patterns and the models' checks agree.

CHART_PATH_PATTERN = re.compile(SPEC["properties"]["chart"]["properties"]["path"]["pattern"])
FILE_PATH_PATTERN = SPEC["properties"]["valuesFrom"]["items"]["properties"]["chartFileRef"]["properties"][
    "path"
]
RELEASE_NAME_PATTERN = re.compile(SPEC["properties"]["releaseName"]["pattern"])


def test_both_path_fields_share_one_pattern() -> None:
    assert FILE_PATH_PATTERN["pattern"] == CHART_PATH_PATTERN.pattern


def _model_accepts_path(path: str) -> bool:
    try:
        ChartFileSelector(path=path)
    except ValidationError:
        return False
    return True


@given(st.text(alphabet="a./", min_size=1, max_size=12))
def test_path_pattern_agrees_with_the_model(path: str) -> None:
    assert bool(CHART_PATH_PATTERN.fullmatch(path)) == _model_accepts_path(path)


def _model_accepts_release_name(name: str) -> bool:
    body = {"metadata": {"name": "x"}, "spec": {"releaseName": name, "chart": {"git": "g", "path": "p"}}}
    try:
        release: HelmRelease = parse_helmrelease(body)
    except SpecError:
        return False
    return release.release_name == name


@given(st.text(alphabet="ab1-._A", min_size=1, max_size=60))
def test_release_name_pattern_agrees_with_the_model(name: str) -> None:
    in_crd = (
        bool(RELEASE_NAME_PATTERN.fullmatch(name))
        and len(name) <= SPEC["properties"]["releaseName"]["maxLength"]
    )
    assert in_crd == _model_accepts_release_name(name)


def test_object_name_fields_share_the_model_patterns() -> None:
    """Every name of a Secret or ConfigMap the spec points at is a DNS-1123 subdomain, every namespace a label,
    in the CRD and in the models alike (the first parse refuses what older objects stored)."""
    chart = SPEC["properties"]["chart"]["properties"]
    sources = SPEC["properties"]["valuesFrom"]["items"]["properties"]
    names = [
        chart["chartPullSecret"]["properties"]["name"],
        chart["secretRef"]["properties"]["name"],
        sources["configMapKeyRef"]["properties"]["name"],
        sources["secretKeyRef"]["properties"]["name"],
        SPEC["properties"]["valueFileSecrets"]["items"]["properties"]["name"],
    ]
    assert {(node["pattern"], node["maxLength"]) for node in names} == {(OBJECT_NAME_PATTERN, 253)}
    namespaces = [sources[kind]["properties"]["namespace"] for kind in ("configMapKeyRef", "secretKeyRef")]
    assert {node["pattern"] for node in namespaces} == {f"^({NAMESPACE_PATTERN[1:-1]})?$"}


def test_urls_and_refs_that_run_commands_have_rules() -> None:
    chart = SPEC["properties"]["chart"]["properties"]
    external = SPEC["properties"]["valuesFrom"]["items"]["properties"]["externalSourceRef"]["properties"][
        "url"
    ]
    for node in (chart["repository"], chart["git"], chart["ref"], external):
        assert node["maxLength"] <= 2048  # bounds the cost of the CEL rules
        assert len(node["x-kubernetes-validations"]) == 1
