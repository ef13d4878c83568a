"""The reconciler's metrics: what series a HelmRelease's object becomes, capped labels, and deleted objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helmrelease.api.constants import Action, ConditionStatus, ConditionType
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.metrics import (
    ACTION_LABELS,
    LABEL_VALUE_MAX,
    ActionResult,
    OperatorMetrics,
    PassResult,
    ReleaseInfo,
    condition_samples,
    condition_states,
    label_value,
    release_info,
)

REPO_CHART = {"repository": "https://charts.example/", "name": "podinfo", "version": "6.5.0"}
GIT_CHART = {"git": "https://git.example/org/charts", "path": "charts/web", "ref": "v1.2"}
LONG = "x" * 300


def body(
    chart: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    *,
    name: str = "web",
    namespace: str = "apps",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "helm.fluxcd.io/v1",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"chart": dict(REPO_CHART if chart is None else chart), **spec},
        "status": dict(status or {}),
    }


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"v": value}
    return value


def conditions(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": status} for kind, status in pairs]}


# --- label values -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("podinfo", "podinfo", id="short"),
        pytest.param("", "", id="empty"),
        pytest.param("y" * LABEL_VALUE_MAX, "y" * LABEL_VALUE_MAX, id="at-the-limit"),
        pytest.param(
            "y" * (LABEL_VALUE_MAX + 1),
            "y" * (LABEL_VALUE_MAX - 13) + "~35152bb05b9c",
            id="one-over-the-limit",
        ),
        pytest.param("chart\ud800", "chart?", id="lone-surrogate"),
        pytest.param('a"b\\c\nd', 'a"b\\c\nd', id="quotes-and-newlines-are-the-exposition's-to-escape"),
    ],
)
def test_label_values_are_capped_and_encodable(value: str, expected: str) -> None:
    assert label_value(value) == expected


@given(st.text(max_size=1000))
def test_every_label_value_is_short_and_encodable(value: str) -> None:
    capped = label_value(value)
    assert len(capped) <= LABEL_VALUE_MAX
    capped.encode("utf-8")


@given(st.text(min_size=LABEL_VALUE_MAX - 20, max_size=400), st.text(min_size=1, max_size=50))
def test_two_long_values_with_one_prefix_stay_apart(prefix: str, tail: str) -> None:
    assert label_value(prefix) != label_value(prefix + tail)


# --- status → series --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({}, [], id="no-status-no-series"),
        pytest.param(
            conditions(("Ready", "True")),
            [("Ready", "True", 1.0), ("Ready", "False", 0.0), ("Ready", "Unknown", 0.0)],
            id="ready",
        ),
        pytest.param(
            conditions(("Ready", "False"), ("Released", "Unknown")),
            [
                ("Released", "True", 0.0),
                ("Released", "False", 0.0),
                ("Released", "Unknown", 1.0),
                ("Ready", "True", 0.0),
                ("Ready", "False", 1.0),
                ("Ready", "Unknown", 0.0),
            ],
            id="in-the-order-of-the-types",
        ),
        pytest.param(
            conditions(("Ready", "True"), ("Ready", "False")),
            [("Ready", "True", 1.0), ("Ready", "False", 0.0), ("Ready", "Unknown", 0.0)],
            id="a-repeated-type-the-first-wins",
        ),
        pytest.param(
            conditions(("Ready", "True"), ("Hacked" + LONG, "True")),
            [("Ready", "True", 1.0), ("Ready", "False", 0.0), ("Ready", "Unknown", 0.0)],
            id="unknown-types-are-not-exported",
        ),
    ],
)
def test_conditions_become_one_series_per_status(
    status: Mapping[str, Any], expected: list[tuple[str, str, float]]
) -> None:
    parsed = HelmReleaseStatus.model_validate(status)
    assert condition_samples(condition_states(parsed)) == expected


def test_every_condition_type_has_exactly_one_current_status() -> None:
    status = HelmReleaseStatus.model_validate(
        conditions(*((kind.value, ConditionStatus.FALSE.value) for kind in ConditionType))
    )
    samples = condition_samples(condition_states(status))
    assert len(samples) == 3 * len(ConditionType)
    for kind in ConditionType:
        assert sum(value for found, _, value in samples if found == kind.value) == 1.0


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            body(status={"revision": "6.4.0"}),
            ReleaseInfo("apps-web", "podinfo", "6.5.0", "6.4.0"),
            id="repository-chart",
        ),
        pytest.param(
            body({"repository": "oci://registry.example/charts", "name": "app", "version": "1.0.0"}),
            ReleaseInfo("apps-web", "app", "1.0.0", ""),
            id="oci-chart-not-deployed-yet",
        ),
        pytest.param(
            body(GIT_CHART, {"revision": "0123abcd"}),
            ReleaseInfo("apps-web", "charts/web", "v1.2", "0123abcd"),
            id="git-chart",
        ),
        pytest.param(
            body({**GIT_CHART, "ref": None}),
            ReleaseInfo("apps-web", "charts/web", "trunk", ""),
            id="git-chart-on-the-default-ref",
        ),
        pytest.param(
            body(releaseName="frontend", targetNamespace="web"),
            ReleaseInfo("frontend", "podinfo", "6.5.0", ""),
            id="release-name",
        ),
        pytest.param(
            body(targetNamespace="web"),
            ReleaseInfo("apps-web-web", "podinfo", "6.5.0", ""),
            id="target-namespace",
        ),
        pytest.param(
            body(values={"a": {"b": {"c": 1}}} | {"deep": _deep(200)}, status={"revision": "6.5.0"}),
            ReleaseInfo("apps-web", "podinfo", "6.5.0", "6.5.0"),
            id="values-are-not-read",
        ),
        pytest.param(
            body({"repository": "https://charts.example/"}, {"revision": "1.0.0"}),
            ReleaseInfo(revision="1.0.0"),
            id="invalid-spec-keeps-the-revision",
        ),
        pytest.param(
            {"metadata": {"name": "web", "namespace": "apps"}, "spec": "garbage", "status": ["garbage"]},
            ReleaseInfo(),
            id="garbage",
        ),
        pytest.param(
            body({**REPO_CHART, "name": LONG, "version": LONG}, {"revision": LONG}),
            ReleaseInfo("apps-web", label_value(LONG), label_value(LONG), label_value(LONG)),
            id="hostile-lengths-are-capped",
        ),
    ],
)
def test_release_info(obj: Mapping[str, Any], expected: ReleaseInfo) -> None:
    assert release_info(obj, default_git_ref="trunk") == expected


# --- the collector ----------------------------------------------------------------------------------------------


def scrape(registry: CollectorRegistry) -> dict[str, list[dict[str, str]]]:
    """Labels of every sample of the per-object families, as Prometheus would parse the exposition."""
    families = text_string_to_metric_families(generate_latest(registry).decode())
    found: dict[str, list[dict[str, str]]] = {"helmrelease_condition": [], "helmrelease_info": []}
    for family in families:
        if family.name in found:
            found[family.name] += [dict(sample.labels, value=str(sample.value)) for sample in family.samples]
    return found


def test_series_follow_the_object_and_go_with_it() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry)
    metrics.observe(body(status=conditions(("Ready", "True"))), default_git_ref="master")
    metrics.observe(body(name="api", status=conditions(("Ready", "False"))), default_git_ref="master")
    assert (
        registry.get_sample_value(
            "helmrelease_condition", {"namespace": "apps", "name": "web", "type": "Ready", "status": "True"}
        )
        == 1.0
    )
    info = {"namespace": "apps", "name": "api", "release": "apps-api", "chart": "podinfo"}
    assert registry.get_sample_value("helmrelease_info", {**info, "version": "6.5.0", "revision": ""}) == 1.0

    metrics.forget("apps", "web")
    series = scrape(registry)
    assert {s["name"] for s in series["helmrelease_condition"]} == {"api"}
    assert {s["name"] for s in series["helmrelease_info"]} == {"api"}
    metrics.forget("apps", "api")
    metrics.forget("apps", "api")  # twice: the watch may say so after a relist
    assert scrape(registry) == {"helmrelease_condition": [], "helmrelease_info": []}


def test_the_spec_is_read_once_per_generation_and_the_status_at_every_event() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry)

    def seen(generation: int, version: str, revision: str, uid: str = "u-1") -> dict[str, str]:
        event = body(
            {**REPO_CHART, "version": version}, {**conditions(("Ready", "True")), "revision": revision}
        )
        event["metadata"].update(uid=uid, generation=generation)
        metrics.observe(event, default_git_ref="master")
        [info] = scrape(registry)["helmrelease_info"]
        return {key: info[key] for key in ("version", "revision")}

    assert seen(1, "6.5.0", "6.5.0") == {"version": "6.5.0", "revision": "6.5.0"}
    # The same generation cannot carry another spec: what it said is kept, the status still followed.
    assert seen(1, "6.6.0", "6.6.0") == {"version": "6.5.0", "revision": "6.6.0"}
    assert seen(2, "6.6.0", "6.6.0") == {"version": "6.6.0", "revision": "6.6.0"}, "a new generation is read"
    assert seen(2, "7.0.0", "6.6.0", uid="u-2") == {"version": "7.0.0", "revision": "6.6.0"}, (
        "a new object too"
    )
    metrics.forget("apps", "web")
    assert seen(2, "7.1.0", "6.6.0", uid="u-2") == {"version": "7.1.0", "revision": "6.6.0"}, (
        "forgotten is forgotten"
    )


def test_a_status_written_moves_the_series_of_a_seen_object_only() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry)
    metrics.observe(body(status=conditions(("Ready", "True"))), default_git_ref="master")
    written = HelmReleaseStatus.model_validate(
        {**conditions(("Released", "Unknown"), ("Ready", "Unknown")), "revision": "6.5.0"}
    )
    metrics.status_written("apps", "web", written)
    metrics.status_written("apps", "gone", written)  # deleted meanwhile: no series comes back
    series = scrape(registry)
    current = {(s["type"], s["status"]) for s in series["helmrelease_condition"] if s["value"] == "1.0"}
    assert current == {("Released", "Unknown"), ("Ready", "Unknown")}
    [info] = series["helmrelease_info"]
    assert (info["name"], info["chart"], info["revision"]) == ("web", "podinfo", "6.5.0")


def test_a_hostile_object_cannot_break_or_bloat_the_exposition() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry)
    chart = {**REPO_CHART, "name": "evil" + LONG * 10, "version": '1"\n} x 1'}
    metrics.observe(body(chart, {"revision": LONG * 100}), default_git_ref="master")
    # A lone surrogate does not parse as a spec (pydantic refuses it): that object's info is empty, not broken.
    metrics.observe(body({**REPO_CHART, "name": "evil\ud800"}, name="api"), default_git_ref="master")
    exposition = generate_latest(registry).decode()
    info = {s["name"]: s for s in scrape(registry)["helmrelease_info"]}
    assert info["web"]["version"] == '1"\n} x 1'
    assert all(len(info["web"][label]) <= LABEL_VALUE_MAX for label in ("chart", "version", "revision"))
    assert (info["api"]["release"], info["api"]["chart"]) == ("", "")
    assert len(exposition) < 20_000


def test_the_closed_label_sets_exist_before_anything_happened() -> None:
    registry = CollectorRegistry()
    OperatorMetrics.create(registry)
    for result in PassResult:
        labels = {"result": result.value}
        assert registry.get_sample_value("helmrelease_reconcile_duration_seconds_count", labels) == 0.0
    for action in ("install", "upgrade", "test", "rollback", "uninstall", "unlock"):
        assert (
            registry.get_sample_value("helmrelease_helm_action_duration_seconds_count", {"action": action})
            == 0
        )
        for outcome in ActionResult:
            labels = {"action": action, "result": outcome.value}
            assert registry.get_sample_value("helmrelease_helm_actions_total", labels) == 0.0


@pytest.mark.parametrize(
    ("action", "label"),
    [
        pytest.param(Action.ADOPT, "upgrade", id="adopt-is-an-upgrade"),
        pytest.param(Action.UNINSTALL_PREVIOUS, "uninstall", id="uninstall-previous-is-an-uninstall"),
        pytest.param(Action.UNLOCK, "unlock", id="unlock"),
    ],
)
def test_helm_actions_are_counted_under_six_names(action: Action, label: str) -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry)
    metrics.helm_action(action, ActionResult.FAILURE, 2.0)
    assert (
        registry.get_sample_value("helmrelease_helm_actions_total", {"action": label, "result": "failure"})
        == 1
    )
    assert registry.get_sample_value("helmrelease_helm_action_duration_seconds_sum", {"action": label}) == 2.0
    assert set(ACTION_LABELS.values()) == {"install", "upgrade", "test", "rollback", "uninstall", "unlock"}
    assert {a for a in Action if a.runs_helm} == set(ACTION_LABELS)


def test_an_object_nothing_refreshes_loses_its_series_unless_a_pass_is_running() -> None:
    """A deletion the watch never reported (it was down) still ends the object's series, three resyncs later."""
    now = [0.0]
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry, stale_after=30, clock=lambda: now[0])
    for name in ("deleted-unseen", "resynced", "long-pass"):
        metrics.observe(body(name=name, status=conditions(("Ready", "True"))), default_git_ref="master")

    def exported() -> set[str]:
        return {s["name"] for s in scrape(registry)["helmrelease_info"]}

    now[0] = 20
    metrics.touch("apps", "resynced")
    with metrics.passing("apps", "long-pass"):
        now[0] = 40
        assert exported() == {"resynced", "long-pass"}
        assert ("apps", "deleted-unseen") in metrics.releases.releases, "a scrape changes nothing"
        metrics.touch("apps", "resynced")  # the loop sweeps
        assert ("apps", "deleted-unseen") not in metrics.releases.releases
    metrics.touch("apps", "deleted-unseen")
    assert "deleted-unseen" not in exported(), "a touch does not bring a dropped object back"
    now[0] = 65
    assert exported() == {"resynced", "long-pass"}, "refreshed at 40 by a touch and by the end of the pass"
    now[0] = 71
    assert exported() == set()
    metrics.observe(body(name="resynced"), default_git_ref="master")  # the watch sees it again (a relist)
    assert exported() == {"resynced"}


def test_without_stale_after_only_a_deletion_ends_the_series() -> None:
    now = [0.0]
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry, clock=lambda: now[0])
    metrics.observe(body(), default_git_ref="master")
    now[0] = 1e9
    metrics.touch("apps", "other")
    assert [s["name"] for s in scrape(registry)["helmrelease_info"]] == ["web"]
