"""kopf's bookkeeping storages: digests instead of the essence, exact change detection, unreadable input as absent.

The storages are driven the way kopf's processing drives them (build, fetch, progress clear, diff, store), with
kopf's own Body, Patch and diff, so a change in kopf's essence or diff semantics shows here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import diffs

from helmrelease.handlers.bookkeeping import (
    DIFFBASE_KEY,
    DigestDiffBaseStorage,
    TolerantProgressStorage,
    UnreadableError,
    decode_diffbase,
    decode_progress,
    encode_digests,
    unreadable_bookkeeping,
)

PREFIX = "helmrelease.helm.fluxcd.io"
DIFFBASE = f"{PREFIX}/{DIFFBASE_KEY}"
PROGRESS = f"{PREFIX}/reconcile.spec"


def hr(values: Any = None, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "helm.fluxcd.io/v1",
        "kind": "HelmRelease",
        "metadata": {
            "name": "web",
            "namespace": "apps",
            "uid": "u-1",
            "resourceVersion": "10",
            "labels": {"team": "a"},
            "annotations": {"fluxcd.io/automated": "true", **annotations},
        },
        "spec": {"chart": {"name": "app"}, "values": values if values is not None else {"a": 1}},
        "status": {"phase": "Succeeded"},
    }


def storages() -> tuple[DigestDiffBaseStorage, TolerantProgressStorage]:
    return DigestDiffBaseStorage(prefix=PREFIX), TolerantProgressStorage(prefix=PREFIX)


def kopf_diff(raw: dict[str, Any]) -> diffs.Diff | None:
    """What kopf's `_detect_causes` computes: None means "no diff base" (a creation)."""
    diffbase, progress = storages()
    body = kopf.Body(raw)
    old = diffbase.fetch(body=body)
    new = diffbase.build(body=body, extra_fields=[("spec",)])
    if old is None:
        return None
    return diffs.diff(progress.clear(essence=old), progress.clear(essence=new))


def stored(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` after kopf stored its diff base (the patch applied as the apiserver would)."""
    diffbase, progress = storages()
    body = kopf.Body(raw)
    essence = progress.clear(essence=diffbase.build(body=body, extra_fields=[("spec",)]))
    patch = kopf.Patch()
    diffbase.store(body=body, patch=patch, essence=essence)
    result = copy.deepcopy(raw)
    result["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    return result


def test_the_diff_base_is_a_few_digests_whatever_the_size_of_the_spec() -> None:
    big = stored(hr({"blob": "x" * 1_000_000}))
    annotation = big["metadata"]["annotations"][DIFFBASE]
    assert len(annotation) < 400
    assert set(json.loads(annotation)["helmrelease-digests/v1"]) == {
        "metadata.annotations",
        "metadata.labels",
        "spec",
    }
    assert big["metadata"]["annotations"][f"{PREFIX}/kopf-managed"] == "yes"


def test_nothing_changed_is_no_diff_even_after_status_and_bookkeeping_writes() -> None:
    raw = stored(hr())
    assert kopf_diff(raw) == diffs.Diff([])
    raw["status"] = {"phase": "Failed"}
    raw["metadata"]["resourceVersion"] = "11"
    raw["metadata"]["annotations"][f"{PREFIX}/reconcile"] = '{"started": "2026-01-01T00:00:00"}'
    assert kopf_diff(raw) == diffs.Diff([])


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        (lambda raw: raw["spec"]["values"].update(a=2), ("spec",)),
        (lambda raw: raw["spec"].pop("values"), ("spec",)),
        (lambda raw: raw["metadata"]["labels"].update(team="b"), ("metadata", "labels")),
        (lambda raw: raw["metadata"].pop("labels"), ("metadata", "labels")),
        (lambda raw: raw["metadata"]["annotations"].update(x="y"), ("metadata", "annotations")),
    ],
    ids=["values", "values-removed", "label", "labels-removed", "annotation"],
)
def test_a_change_shows_in_exactly_its_stanza(change: Any, changed: tuple[str, ...]) -> None:
    raw = stored(hr())
    change(raw)
    diff = kopf_diff(raw)
    assert diff is not None
    assert {op.field for op in diff} == {changed}
    # What `@kopf.on.update(field="spec")` looks at: only a spec change reaches the reconcile handler.
    assert bool(diffs.reduce(diff, ["spec"])) == (changed == ("spec",))


def test_a_stock_kopf_essence_from_before_the_upgrade_is_read_as_it_was() -> None:
    raw = hr()
    essence = storages()[0].build(body=kopf.Body(raw))
    raw["metadata"]["annotations"][DIFFBASE] = json.dumps(essence) + "\n"
    assert kopf_diff(raw) == diffs.Diff([])
    raw["spec"]["values"] = {"a": 2}
    diff = kopf_diff(raw)
    assert diff is not None
    assert [op.field for op in diff] == [("spec", "values", "a")]
    # The next store replaces it with digests.
    assert "helmrelease-digests/v1" in stored(raw)["metadata"]["annotations"][DIFFBASE]


GARBLED_DIFFBASE = [
    ("{not json", "not JSON"),
    ("", "not JSON"),
    ('"a string"', "a JSON str, not an object"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"helmrelease-digests/v1": ["spec"]}', "digests that are not a map"),
    ('{"helmrelease-digests/v1": {"spec": 1}}', "digests that are not a map"),
]


@pytest.mark.parametrize(("raw", "problem"), GARBLED_DIFFBASE)
def test_an_unreadable_diff_base_reads_as_absent_and_is_listed(raw: str, problem: str) -> None:
    body = hr(**{DIFFBASE: raw})
    assert kopf_diff(body) is None  # kopf handles the object as new: the reconcile pass decides from the spec
    with pytest.raises(UnreadableError, match=problem):
        decode_diffbase(raw)
    [found] = unreadable_bookkeeping(body["metadata"]["annotations"], PREFIX)
    assert found.annotation == DIFFBASE
    assert problem in found.problem
    assert DIFFBASE in found.message


GARBLED_PROGRESS = [
    ("{not json", "not JSON"),
    ("null", "a JSON NoneType"),
    ('{"started": 5}', "started is not a str"),
    ('{"started": "yesterday"}', "started is not a timestamp"),
    ('{"retries": "many"}', "retries is not a int"),
    ('{"retries": true}', "retries is not a int"),
    ('{"success": "yes"}', "success is not a bool"),
    ('{"subrefs": [1]}', "subrefs are not handler ids"),
    ('{"subrefs": "a"}', "subrefs is not a list"),
]


@pytest.mark.parametrize(("raw", "problem"), GARBLED_PROGRESS)
def test_an_unreadable_progress_record_reads_as_absent_and_is_listed(raw: str, problem: str) -> None:
    body = kopf.Body(hr(**{PROGRESS: raw}))
    assert storages()[1].fetch(key="reconcile/spec", body=body) is None
    with pytest.raises(UnreadableError, match=problem):
        decode_progress(raw)
    [found] = unreadable_bookkeeping(body.metadata.annotations, PREFIX)
    assert (found.annotation, found.problem.startswith(problem)) == (PROGRESS, True)


def test_readable_bookkeeping_is_used_and_not_listed() -> None:
    record = {"started": "2026-01-01T00:00:00.123456+00:00", "retries": 2, "success": False, "subrefs": ["a"]}
    raw = stored(hr(**{PROGRESS: json.dumps(record), f"{PREFIX}/touch-dummy": "2026-01-01T00:00:00"}))
    body = kopf.Body(raw)
    assert storages()[1].fetch(key="reconcile/spec", body=body) == record
    assert unreadable_bookkeeping(body.metadata.annotations, PREFIX) == []


def test_the_same_garbled_content_has_the_same_digest_and_other_content_another() -> None:
    first = unreadable_bookkeeping({DIFFBASE: "{x"}, PREFIX)[0]
    again = unreadable_bookkeeping({DIFFBASE: "{x"}, PREFIX)[0]
    other = unreadable_bookkeeping({DIFFBASE: "{y"}, PREFIX)[0]
    assert first.digest == again.digest != other.digest


def test_digests_ignore_our_own_annotations() -> None:
    plain = encode_digests({"spec": {"a": 1}, "metadata": {"annotations": {"x": "1"}}}, PREFIX)
    with_ours = encode_digests(
        {"spec": {"a": 1}, "metadata": {"annotations": {"x": "1", f"{PREFIX}/reconcile": "{}"}}}, PREFIX
    )
    assert plain == with_ours


def busy_hr() -> dict[str, Any]:
    """A HelmRelease as the watch delivers it after a while: managed fields, kopf's and kubectl's annotations,
    another kopf operator's bookkeeping, a status with conditions."""
    raw = hr(
        {"nested": {"list": [1, {"x": "y"}]}},
        **{
            DIFFBASE: encode_digests({"spec": {"old": True}}, PREFIX),
            PROGRESS: json.dumps({"started": "2026-01-01T00:00:00.000000", "success": True}),
            f"{PREFIX}/kopf-managed": "yes",
            "other.example.com/kopf-managed": "yes",
            "other.example.com/last-handled-configuration": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    )
    raw["metadata"]["managedFields"] = [{"manager": "helmrelease", "fieldsV1": {"f:status": {}}}]
    raw["metadata"]["finalizers"] = ["helm.fluxcd.io/finalizer"]
    raw["status"] = {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "True"}]}
    return raw


@pytest.mark.parametrize(
    "extra_fields",
    [
        None,
        [],
        [("spec",), ("metadata", "labels"), ("metadata", "annotations")],  # the operator's own handlers
        ["spec.values"],
        [("status", "phase")],
        [("metadata", "finalizers")],
        [("metadata",)],
        [("kind",)],
    ],
    ids=["none", "empty", "handlers", "dotted", "status", "finalizers", "metadata", "kind"],
)
def test_the_essence_is_kopfs_own_without_its_copy_of_the_whole_object(extra_fields: Any) -> None:
    ours = DigestDiffBaseStorage(prefix=PREFIX)
    stock = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=DIFFBASE_KEY)
    raw = busy_hr()
    before = copy.deepcopy(raw)
    built = ours.build(body=kopf.Body(raw), extra_fields=extra_fields)
    assert built == stock.build(body=kopf.Body(raw), extra_fields=extra_fields)
    assert "status" not in built or extra_fields == [("status", "phase")]
    built.setdefault("spec", {})["changed"] = True  # type: ignore[index]
    assert raw == before, "the essence is a copy: changing it leaves the object alone"
