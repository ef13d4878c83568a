"""docs/reference/helmrelease.md is the CRD rendered by tests/support/crd_reference.py, and says all it holds."""

from __future__ import annotations

import copy

from tests.support.crd_reference import CRD_PATH, REFERENCE_PATH, REGENERATE, fields, load_crd, render


def test_the_committed_reference_is_rendered_from_the_current_crd() -> None:
    committed = REFERENCE_PATH.read_text() if REFERENCE_PATH.exists() else ""
    assert committed == render(load_crd()), (
        f"{REFERENCE_PATH.name} is out of date with {CRD_PATH.name}: run `{REGENERATE}` and commit the result"
    )


def test_every_field_of_the_schema_has_a_row_with_its_description() -> None:
    crd = load_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = render(crd)
    for name in ("spec", "status"):
        for field in list(fields(schema["properties"][name], name))[1:]:  # the section itself is the heading
            assert f"| `{field.path}` |" in text, field.path
            description = " ".join(field.node.get("description", "").split())
            first_words = description.split(".")[0][:40].replace("<", "&lt;").replace(">", "&gt;")
            assert first_words in text, field.path


def test_a_change_to_the_crd_changes_the_reference() -> None:
    """The check cannot pass by accident: a new field, a new constraint and a new rule each show."""
    crd = load_crd()
    changed = copy.deepcopy(crd)
    spec = changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["suspendForTest"] = {"type": "boolean", "description": "A field added in this test."}
    spec["properties"]["maxHistory"]["maximum"] = 99
    spec["x-kubernetes-validations"] = [{"rule": "self.maxHistory < 99", "message": "keep less history"}]
    text = render(changed)
    assert text != render(crd)
    assert "| `spec.suspendForTest` | boolean |  | A field added in this test. |" in text
    assert "| `spec.maxHistory` | integer | ≥ 0; ≤ 99 |" in text
    assert "- on `spec`: `self.maxHistory < 99`; refused with: keep less history" in text


def test_pipes_in_patterns_do_not_split_table_cells_and_angle_brackets_stay_visible() -> None:
    text = render(load_crd())
    row = next(line for line in text.splitlines() if line.startswith("| `spec.chart.path` |"))
    assert row.count(" | ") == 3, "four cells: every | of the pattern escaped"
    assert "&lt;targetNamespace&gt;-&lt;name&gt;" in text
