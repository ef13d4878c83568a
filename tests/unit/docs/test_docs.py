"""docs/ says what the code does: its examples parse and validate, its tables are checked against the code.

Every YAML block parses; every HelmRelease in one validates against the CRD's openAPIV3Schema (jsonschema), declares
no field the API server would prune, parses with the operator's own model and has annotations the sidecar reads
without a warning; the policy examples are decided by `images.policy`; every reason the operator or the sidecar
writes is documented, and every reason documented exists; metric names exist; relative links resolve. The CEL rules
of the CRD are checked by the real API server in tests/integration/test_docs_examples.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry
from tests.support.crd_reference import load_crd
from tests.support.docs import (
    DOCS_DIR,
    MARKDOWN,
    REPO_ROOT,
    anchors,
    blocks,
    code_spans,
    documents,
    helmrelease_examples,
    links,
    prose_lines,
    table_rows,
    yaml_blocks,
)

from helmrelease.adapters.registry.metrics import RegistryMetrics
from helmrelease.api.constants import Reason
from helmrelease.api.resource import parse_helmrelease
from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.service import EventReason
from helmrelease.automation.webhooks import WebhookMetrics
from helmrelease.images.annotations import read_automation_settings
from helmrelease.images.detect import detect_images
from helmrelease.images.policy import PolicyError, parse_policy
from helmrelease.reconcile.metrics import OperatorMetrics

SCHEMA: dict[str, Any] = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
BLOCKS = yaml_blocks()
EXAMPLES = helmrelease_examples()
IMAGE_AUTOMATION = DOCS_DIR / "image-automation.md"
TROUBLESHOOTING = DOCS_DIR / "troubleshooting.md"


def undeclared(value: Any, node: dict[str, Any], path: str) -> list[str]:
    """Keys of `value` the schema `node` does not declare: the API server would drop them without a word."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        properties = node.get("properties", {})
        return [
            missing
            for key, child in value.items()
            for missing in (
                [f"{path}.{key}"]
                if key not in properties
                else undeclared(child, properties[key], f"{path}.{key}")
            )
        ]
    if isinstance(value, list):
        return [
            missing
            for i, item in enumerate(value)
            for missing in undeclared(item, node["items"], f"{path}[{i}]")
        ]
    return []


def test_the_docs_have_yaml_examples_and_helmreleases_among_them() -> None:
    """The tests below cannot pass by finding nothing."""
    assert len(BLOCKS) >= 10
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_every_yaml_block_parses(block: Any) -> None:
    assert documents(block), f"{block.where}: an empty YAML block"


@pytest.mark.parametrize(("where", "body"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_every_helmrelease_example_validates_against_the_crd_schema(where: str, body: dict[str, Any]) -> None:
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(body)
    ]
    assert errors == [], where
    assert undeclared(body["spec"], SCHEMA["properties"]["spec"], "spec") == [], where


@pytest.mark.parametrize(("where", "body"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_every_helmrelease_example_parses_and_its_annotations_read_cleanly(
    where: str, body: dict[str, Any]
) -> None:
    metadata = {"namespace": "docs", **body["metadata"], "uid": "u", "generation": 1}
    release = parse_helmrelease({**body, "metadata": metadata})
    assert release.release_name, where
    annotations = metadata.get("annotations") or {}
    settings = read_automation_settings(annotations)
    assert settings.warnings == (), where
    detection = detect_images(body["spec"].get("values") or {}, annotations)
    assert detection.problems == (), where
    assert [image.warnings for image in detection.images if image.warnings] == [], where
    containers = [image.container for image in detection.images]
    assert settings.unmatched_containers(containers) == (), where
    for container in containers:
        settings.policy_for(container)  # raises PolicyError for a policy that does not parse


def policy_rows() -> list[tuple[str, list[str], list[str]]]:
    rows = table_rows(IMAGE_AUTOMATION, "Policy examples")
    return [
        (code_spans(policy)[0], code_spans(admits), code_spans(refuses)) for policy, admits, refuses in rows
    ]


POLICIES = policy_rows()


def test_the_policy_table_is_found() -> None:
    assert len(POLICIES) >= 15


@pytest.mark.parametrize(("policy", "admits", "refuses"), POLICIES, ids=[row[0] for row in POLICIES])
def test_each_documented_policy_admits_and_refuses_what_the_table_says(
    policy: str, admits: list[str], refuses: list[str]
) -> None:
    parsed = parse_policy(policy)
    if not admits:  # a row that admits nothing says why; the policy warns of it too
        assert parsed.warnings
    assert [tag for tag in admits if not parsed.matches(tag)] == []
    assert [tag for tag in refuses if parsed.matches(tag)] == []


INVALID = [code_spans(row[0])[0] for row in table_rows(IMAGE_AUTOMATION, "Policies that do not parse")]


def test_the_table_of_invalid_policies_is_found() -> None:
    assert len(INVALID) >= 4


@pytest.mark.parametrize("policy", INVALID)
def test_each_documented_invalid_policy_is_refused(policy: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(policy)


def documented_reasons(path: Path) -> set[str]:
    """The reasons of a file's tables whose first column is a reason (`Reason` in the header)."""
    reasons: set[str] = set()
    lines = [line for _, line in prose_lines(path)]
    header: list[str] | None = None
    for line in lines:
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if "reason" in header[0].lower() and not set(cells[0]) <= {"-", ":"}:
            reasons.update(span for span in code_spans(cells[0]) if re.fullmatch(r"[A-Z][A-Za-z]+", span))
    return reasons


def test_every_reason_the_operator_writes_is_in_the_troubleshooting_tables() -> None:
    written = {reason.value for reason in Reason} | {"ApiUnavailable", "ApiError"}
    assert written - documented_reasons(TROUBLESHOOTING) == set()


def test_every_reason_in_the_troubleshooting_tables_is_one_the_code_writes() -> None:
    written = {reason.value for reason in Reason} | {"ApiUnavailable", "ApiError"}
    sidecar = {reason.value for reason in EventReason}
    assert documented_reasons(TROUBLESHOOTING) - written - sidecar == set()


def test_every_event_the_sidecar_posts_is_documented_and_no_other() -> None:
    assert documented_reasons(IMAGE_AUTOMATION) == {reason.value for reason in EventReason}


def metric_names() -> set[str]:
    registry = CollectorRegistry()
    AutomationMetrics.create(registry)
    RegistryMetrics.create(registry)
    OperatorMetrics.create(registry)
    WebhookMetrics.create(registry)
    suffixes = {"counter": ("_total",), "histogram": ("", "_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def test_every_metric_the_docs_name_exists() -> None:
    known = metric_names()
    named = {
        (path.name, name)
        for path in MARKDOWN
        for name in re.findall(r"\bhelmrelease_[a-z_]+[a-z]", path.read_text())
    }
    assert {(file, name) for file, name in named if name not in known} == set()
    assert any(name == "helmrelease_image_update_failures_total" for _, name in named)


def test_relative_links_and_their_anchors_resolve() -> None:
    broken = []
    for path in MARKDOWN:
        for line, target in links(path):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(REPO_ROOT)}:{line}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{path.relative_to(REPO_ROOT)}:{line}: no heading for #{anchor}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_index_and_the_index_from_the_readme() -> None:
    index = DOCS_DIR / "README.md"
    linked = {(index.parent / target.partition("#")[0]).resolve() for _, target in links(index)}
    pages = {path.resolve() for path in DOCS_DIR.rglob("*.md")} - {index.resolve()}
    assert pages - linked == set()
    assert any(target.startswith("docs/") for _, target in links(REPO_ROOT / "README.md"))


def test_fences_are_closed() -> None:
    """An unclosed fence would swallow the rest of a page (and hide its blocks from these tests)."""
    for path in MARKDOWN:
        fences = [
            line for _, line in enumerate(path.read_text().splitlines()) if line.strip().startswith("```")
        ]
        assert len(fences) % 2 == 0, path
        assert sum(1 for _ in blocks(path)) == len(fences) // 2, path
