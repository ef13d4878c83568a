"""`make docs`: docs/reference/helmrelease.md, the HelmRelease reference, generated from crds/helmrelease.yaml.

The CRD's openAPIV3Schema is the one description of every field (the apiserver enforces it, the models are kept in
step with it by tests/unit/api/test_api_crd.py), so the reference is rendered from it rather than written twice:
one row per field with its type, its constraints and its description, then the CEL rules with their messages.
`render` is pure; tests/unit/docs/test_crd_reference.py fails while the committed file differs from its output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.support.procs import REPO_ROOT

CRD_PATH = REPO_ROOT / "crds" / "helmrelease.yaml"
REFERENCE_PATH = REPO_ROOT / "docs" / "reference" / "helmrelease.md"
REGENERATE = "make docs"

Node = Mapping[str, Any]


@dataclass(frozen=True)
class Field:
    """One schema node, at its path from the object's root (`spec.chart.repository`, `spec.valuesFrom[]`)."""

    path: str
    node: Node
    required: bool


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    crd: dict[str, Any] = YAML(typ="safe").load(path)
    return crd


def fields(node: Node, path: str, *, required: bool = False) -> Iterator[Field]:
    """`node` and every node below it, depth first, properties in the CRD's order."""
    yield Field(path, node, required)
    needed = set(node.get("required", ()))
    for name, child in (node.get("properties") or {}).items():
        yield from fields(child, f"{path}.{name}", required=name in needed)
    if "items" in node:
        yield from fields(node["items"], f"{path}[]")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def prose(text: object) -> str:
    """Schema text as Markdown prose: one line, `<name>` shown rather than read as an HTML tag."""
    return one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cell(text: str) -> str:
    """Markdown safe inside a GitHub table cell: pipes escaped (also inside code spans, as GFM wants)."""
    return text.replace("|", "\\|")


def code(text: object) -> str:
    """`text` as a code span; a backtick inside gets a longer fence."""
    value = str(text)
    fence = "``" if "`" in value else "`"
    padding = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{padding}{value}{padding}{fence}"


def type_of(node: Node) -> str:
    """The field's type as a reader wants it: `integer (int64)`, `array of object`, `object (any fields)`."""
    kind = str(node.get("type", "any"))
    if kind == "array":
        kind = f"array of {type_of(node.get('items') or {})}"
    elif node.get("format") and kind != "array":
        kind = f"{kind} ({node['format']})"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        kind = f"{kind} (any fields)"
    return kind


def constraints(node: Node, required: bool) -> str:
    """What the apiserver enforces on the value itself, beside its type."""
    parts = ["required"] if required else []
    if "enum" in node:
        parts.append("one of " + ", ".join(code(value) for value in node["enum"]))
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern {code(node['pattern'])}")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", ()))
        parts.append(f"a list keyed by {keys}")
    return "; ".join(parts)


def table(section: Field, *, skip: frozenset[str] = frozenset()) -> list[str]:
    rows = ["| field | type | constraints | description |", "|---|---|---|---|"]
    for field in fields(section.node, section.path):
        if field.path == section.path or any(field.path.startswith(prefix) for prefix in skip):
            continue
        rows.append(
            f"| {code(field.path)} | {type_of(field.node)} | {cell(constraints(field.node, field.required))} "
            f"| {cell(prose(field.node.get('description', '')))} |"
        )
    return rows


def rules(section: Field) -> list[str]:
    """The CEL rules (`x-kubernetes-validations`) below `section`, each with the message the apiserver returns."""
    lines: list[str] = []
    for field in fields(section.node, section.path):
        for rule in field.node.get("x-kubernetes-validations", ()):
            lines.append(
                f"- on {code(field.path)}: {code(one_line(rule['rule']))}; refused with: "
                f"{prose(rule.get('message', ''))}"
            )
    return lines


def render(crd: Mapping[str, Any]) -> str:
    """The whole reference page for the CRD's (single) version."""
    spec = crd["spec"]
    names = spec["names"]
    (version,) = spec["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    api_version = f"{spec['group']}/{version['name']}"
    out = [
        f"<!-- Generated from crds/helmrelease.yaml by `{REGENERATE}` (tests/support/crd_reference.py). "
        "Do not edit: edit the CRD and regenerate. -->",
        "",
        f"# {names['kind']} reference ({api_version})",
        "",
        prose(schema.get("description", "")),
        "",
        "| | |",
        "|---|---|",
        f"| apiVersion | {code(api_version)} |",
        f"| kind | {code(names['kind'])} (list: {code(names['listKind'])}) |",
        f"| plural, singular | {code(names['plural'])}, {code(names['singular'])} |",
        f"| short names | {', '.join(code(name) for name in names.get('shortNames', ()))} |",
        f"| scope | {spec['scope']} |",
        f"| subresources | {', '.join(code(name) for name in version.get('subresources', {}))} |",
        "",
        "Defaults are applied by the operator, not stored by the API server: a field left out stays out of the "
        "object, and its description says what the operator uses instead. Examples: [the quick start]"
        "(../quickstart.md) and [manifests/examples](../../manifests/examples/).",
        "",
        f"## `kubectl get {names['shortNames'][0]}` columns",
        "",
        "| column | type | JSON path | description |",
        "|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns", ()):
        out.append(
            f"| {column['name']} | {column['type']} | {cell(code(column['jsonPath']))} "
            f"| {cell(prose(column.get('description', '')))} |"
        )
    top = {
        name: Field(name, node, name in schema.get("required", ()))
        for name, node in schema["properties"].items()
    }
    for name in ("spec", "status"):
        section = top[name]
        out += ["", f"## {name}", "", prose(section.node.get("description", "")), ""]
        if section.required:
            out += [f"`{name}` is required.", ""]
        out += table(section)
        validations = rules(section)
        if validations:
            out += [
                "",
                f"Validation rules on `{name}` (CEL, checked by the API server on create and update):",
                "",
            ]
            out += validations
    other = [field for key, field in top.items() if key not in ("spec", "status")]
    if other:
        out += ["", "## Other top-level fields", "", "| field | type | description |", "|---|---|---|"]
        out += [
            f"| {code(field.path)} | {type_of(field.node)} | {cell(prose(field.node.get('description', '')))} |"
            for field in other
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    options = parser.parse_args(argv)
    text = render(load_crd())
    if options.check:
        if not REFERENCE_PATH.exists() or REFERENCE_PATH.read_text() != text:
            print(
                f"{REFERENCE_PATH.relative_to(REPO_ROOT)} is out of date: run `{REGENERATE}`", file=sys.stderr
            )
            return 1
        return 0
    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_PATH.write_text(text)
    print(f"wrote {REFERENCE_PATH.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
