"""Operating a release the Flux v2 way, against the real operator process, kube-apiserver, helm and chart repository:
reconcile.fluxcd.io/requestedAt, forceAt and resetAt; spec.suspend; drift that names what drifted; one log line per
decision, with its fields as JSON keys.

The operator resyncs every 300 s here unless a test says otherwise, so whatever happens within a test's wait was
caused by what the test did (an annotation, a spec change), not by a resync.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    StartOperator,
    condition,
    create_hr,
    delete_and_wait_gone,
    events_for,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
)
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

REQUESTED, FORCE, RESET = (f"reconcile.fluxcd.io/{key}" for key in ("requestedAt", "forceAt", "resetAt"))


@pytest.fixture
def app_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}


def patch(custom: k8s.CustomObjectsApi, namespace: str, name: str, body: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)


def annotate(custom: k8s.CustomObjectsApi, namespace: str, name: str, **annotations: str) -> None:
    patch(custom, namespace, name, {"metadata": {"annotations": annotations}})


def statuses(helm: Helm, namespace: str, release: str) -> list[str]:
    return [entry["status"] for entry in helm.json("history", release, "--namespace", namespace)]


def config_map(core: k8s.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    return dict(core.read_namespaced_config_map(name, namespace).data or {})


def handled(field: str, token: str) -> Callable[[dict[str, Any]], bool]:
    return lambda hr: (hr.get("status") or {}).get(field) == token


def generation_ready(generation: int) -> Callable[[dict[str, Any]], bool]:
    return lambda hr: ready(hr) and hr["status"].get("observedGeneration") == generation


def test_requested_at_reconciles_now_and_echoes_its_token(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("now", app_chart, {"message": "declared"}))
    wait_for_hr(custom, namespace, "now", ready, operator=operator)
    release = f"{namespace}-now"
    core.patch_namespaced_config_map(release, namespace, {"data": {"message": "edited by hand"}})
    annotate(custom, namespace, "now", **{REQUESTED: "2026-12-02T07:00:00Z"})
    hr = wait_for_hr(
        custom, namespace, "now", handled("lastHandledReconcileAt", "2026-12-02T07:00:00Z"), operator=operator
    )
    # The pass it asked for ran (no resync is due for minutes): it found the drift and corrected it.
    assert config_map(core, namespace, release)["message"] == "declared", operator.tail()
    assert condition(hr, "Drifted")["reason"] == "DriftCorrected"
    assert hr["metadata"]["generation"] == 1, "an annotation moves no generation"
    assert condition(hr, "Ready")["status"] == "True"


def test_force_after_exhausted_retries_upgrades_once_and_reset_starts_the_retries_over(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    rollback = {"enable": True, "retry": True, "maxRetries": 1}
    create_hr(
        custom, namespace, helmrelease("ex", app_chart, {"message": "good"}, rollback=rollback, timeout=30)
    )
    wait_for_hr(custom, namespace, "ex", ready, operator=operator)
    patch(custom, namespace, "ex", {"spec": {"values": {"message": "bad", "failure": "apply"}}})
    wait_for_condition(
        custom, namespace, "ex", "Ready", reason="RetriesExhausted", operator=operator, timeout=120
    )
    release = f"{namespace}-ex"
    exhausted = ["superseded", "failed", "superseded", "failed", "deployed"]
    assert statuses(helm, namespace, release) == exhausted

    # forceAt with the same token as requestedAt: one upgrade (it fails again, and is rolled back), no more.
    annotate(custom, namespace, "ex", **{REQUESTED: "f1", FORCE: "f1"})
    hr = wait_for_hr(custom, namespace, "ex", handled("lastHandledForceAt", "f1"), operator=operator)
    assert hr["status"]["lastHandledReconcileAt"] == "f1"
    forced = ["superseded", "failed", "superseded", "failed", "superseded", "failed", "deployed"]
    assert statuses(helm, namespace, release) == forced, operator.tail()
    assert condition(hr, "Ready")["reason"] == "RetriesExhausted"
    assert "ForceRequested" in operator.log()

    # resetAt: the counters zeroed, the upgrade is tried again with its retries (rollbackCount counts from 0).
    annotate(custom, namespace, "ex", **{REQUESTED: "r1", RESET: "r1"})
    hr = wait_for_hr(custom, namespace, "ex", handled("lastHandledResetAt", "r1"), operator=operator)
    assert hr["status"]["rollbackCount"] == 1, hr["status"]
    assert statuses(helm, namespace, release) == [*forced[:-1], "superseded", "failed", "deployed"]
    # ... and the retry after that rollback comes by itself, until retries are used up again.
    hr = wait_for_hr(
        custom,
        namespace,
        "ex",
        lambda hr: (
            condition(hr, "Ready").get("reason") == "RetriesExhausted"
            and hr["status"].get("rollbackCount") == 2
        ),
        operator=operator,
        timeout=120,
    )
    # (helm keeps 10 revisions, spec.maxHistory's default: count by revision number)
    latest = helm.json("history", release, "--namespace", namespace)[-1]
    assert (latest["revision"], latest["status"]) == (len(forced) + 4, "deployed")


def test_suspended_release_is_not_upgraded_when_values_change_and_resumes_at_once(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("sus", app_chart, {"message": "one"}))
    wait_for_hr(custom, namespace, "sus", ready, operator=operator)
    release = f"{namespace}-sus"
    patch(custom, namespace, "sus", {"spec": {"suspend": True}})
    hr = wait_for_condition(
        custom, namespace, "sus", "Ready", status="False", reason="Suspended", operator=operator
    )
    assert "helmrelease resume" in condition(hr, "Ready")["message"]
    assert condition(hr, "Suspended")["status"] == "True"

    patch(custom, namespace, "sus", {"spec": {"values": {"message": "two"}}})
    # The pass for the change had its chance: it ran and settled on generation 3 (observedGeneration), and did nothing.
    hr = wait_for_hr(
        custom, namespace, "sus", lambda hr: hr["status"].get("observedGeneration") == 3, operator=operator
    )
    assert statuses(helm, namespace, release) == ["deployed"]
    assert config_map(core, namespace, release)["message"] == "one"
    assert condition(hr, "Ready")["reason"] == "Suspended"

    # No drift correction either, even when a pass is asked for.
    core.patch_namespaced_config_map(release, namespace, {"data": {"message": "edited by hand"}})
    annotate(custom, namespace, "sus", **{REQUESTED: "s1", FORCE: "s1"})
    hr = wait_for_hr(custom, namespace, "sus", handled("lastHandledReconcileAt", "s1"), operator=operator)
    assert config_map(core, namespace, release)["message"] == "edited by hand"
    assert statuses(helm, namespace, release) == ["deployed"]
    assert "lastHandledForceAt" not in hr["status"], "a force waits for the resume"
    assert [reason for _, reason, _ in events_for(core, namespace, "sus")].count("Suspended") == 1

    # Resuming reconciles at once (no resync is due): the new values, and the force, in one upgrade.
    patch(custom, namespace, "sus", {"spec": {"suspend": False}})
    hr = wait_for_hr(
        custom, namespace, "sus", generation_ready(4), operator=operator, what="Ready at generation 4"
    )
    assert statuses(helm, namespace, release) == ["superseded", "deployed"]
    assert config_map(core, namespace, release)["message"] == "two"
    assert condition(hr, "Suspended") == {}
    assert hr["status"]["lastHandledForceAt"] == "s1"


def test_deleting_a_suspended_helmrelease_leaves_its_release_installed(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("keep", app_chart, {"message": "kept"}))
    wait_for_hr(custom, namespace, "keep", ready, operator=operator)
    patch(custom, namespace, "keep", {"spec": {"suspend": True}})
    wait_for_condition(custom, namespace, "keep", "Ready", reason="Suspended", operator=operator)
    delete_and_wait_gone(custom, namespace, "keep", operator=operator)
    release = f"{namespace}-keep"
    assert [entry["name"] for entry in helm.json("list", "--namespace", namespace)] == [release]
    assert config_map(core, namespace, release)["message"] == "kept"
    assert f"release {namespace}/{release} is left installed" in operator.log()


def test_drift_names_the_objects_and_fields_and_clears_once_corrected(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator(resync_interval=2)
    create_hr(custom, namespace, helmrelease("drift", app_chart, {"message": "declared"}))
    wait_for_hr(custom, namespace, "drift", ready, operator=operator)
    release = f"{namespace}-drift"
    core.patch_namespaced_config_map(release, namespace, {"data": {"message": "edited by hand"}})
    core.delete_namespaced_service(release, namespace)

    def told() -> str | None:
        for _, reason, message in events_for(core, namespace, "drift"):
            if reason == "DriftDetected":
                return message
        return None

    message = eventually(told, 60, "a DriftDetected Event", context=operator.tail)
    assert message.startswith(
        f"Drift in release {namespace}/{release}: 2 objects differ from the release manifest"
    )
    assert f"ConfigMap {namespace}/{release} changed at .data.message" in message.splitlines()
    assert f"Service {namespace}/{release} is missing" in message.splitlines()
    # Drifted said the same while it lasted, and is False once the upgrade put things back.
    hr = wait_for_condition(custom, namespace, "drift", "Drifted", status="False", operator=operator)
    assert condition(hr, "Drifted")["reason"] in {"DriftCorrected", "NoDrift"}
    eventually(
        lambda: core.read_namespaced_service(release, namespace),
        30,
        "the Service to be back",
        ignoring=(ApiException,),
    )
    assert config_map(core, namespace, release)["message"] == "declared"


def test_each_decision_is_one_json_log_line_with_its_fields(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator("--log-format", "json")
    create_hr(custom, namespace, helmrelease("logs", app_chart, {"message": "one"}))
    wait_for_hr(custom, namespace, "logs", ready, operator=operator)
    annotate(custom, namespace, "logs", **{REQUESTED: "l1", FORCE: "l1"})
    wait_for_hr(custom, namespace, "logs", handled("lastHandledForceAt", "l1"), operator=operator)

    def decisions() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in operator.log().splitlines() if line.startswith("{")]
        return [e for e in entries if e.get("helmrelease") == f"{namespace}/logs" and "action" in e]

    found = eventually(
        lambda: decisions()[3:] and decisions(), 10, "four decision lines", context=operator.tail
    )
    assert [(e["action"], e["reason"], e["result"]) for e in found] == [
        ("install", "ReleaseAbsent", "succeeded"),
        ("nothing", "InSync", "decided"),
        ("upgrade", "ForceRequested", "succeeded"),
        ("nothing", "InSync", "decided"),
    ]
    assert [e["revision"] for e in found] == [1, 1, 2, 2]
    assert all(e["level"] == "info" and e["chart"] == "0.1.0" for e in found)
    assert all(isinstance(e["duration"], float | int) and e["duration"] >= 0 for e in found)
    assert found[2]["message"].startswith(f"HelmRelease {namespace}/logs: upgrade ForceRequested succeeded (")
