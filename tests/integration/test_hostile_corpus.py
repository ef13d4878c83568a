"""The hostile-input corpus (tests/support/hostile_corpus.py) through one real operator and one sidecar cycle.

Every entry is sent to the real kube-apiserver in one namespace. What the API server refuses must be a 422 naming
the field (or its 413 for a body over its limit); what it stores, the operator must answer with ``Ready=False``, a
CamelCase reason, a message to act on and exactly one Warning Event, or install verbatim when the content is valid
however hostile it looks. Meanwhile neither process may crash or log a traceback, a valid release created after the
corpus must install, and the canary file every shell payload would ``touch`` must never exist.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tests.integration.test_image_policy import app  # noqa: F401 - a fixture
from tests.integration.test_image_policy_cli import helmrelease_cli, sidecar_args
from tests.support.charts import ChartRepository
from tests.support.hostile_corpus import (
    PLAIN_VALUES,
    Context,
    Fails,
    Hostile,
    Installs,
    Refused,
    SidecarWarns,
    corpus,
)
from tests.support.operator import (
    Operator,
    StartOperator,
    condition,
    create_config_map,
    create_hr,
    get_hr,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.registry import Registry

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

#: Conditions whose reason tells why a release is not Ready (Ready itself carries the summary).
EXPLAINING = ("Ready", "Released", "ChartFetched")


def body_of(entry: Hostile, name: str, chart: dict[str, Any]) -> dict[str, Any]:
    """A valid HelmRelease named `name`, changed as the entry says."""
    body = helmrelease(name, chart, PLAIN_VALUES)
    spec = copy.deepcopy(entry.spec)
    hostile_chart = spec.pop("chart", {})
    if isinstance(hostile_chart, dict):
        merged = {**body["spec"]["chart"], **hostile_chart}
        body["spec"]["chart"] = {key: value for key, value in merged.items() if value is not None}
    else:
        body["spec"]["chart"] = hostile_chart
    body["spec"].update(spec)
    body["metadata"].update(copy.deepcopy(entry.metadata))
    return body


def warnings_on(core: k8s.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str, int]]:
    """(reason, message, count) of every Warning Event on the object: a repeat counted on one Event shows."""
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.message, e.count or 1) for e in items if e.type == "Warning"]


def explained(reason: str) -> Any:
    def holds(hr: dict[str, Any]) -> bool:
        return condition(hr, "Ready").get("status") == "False" and any(
            condition(hr, kind).get("reason") == reason for kind in EXPLAINING
        )

    return holds


def everything_about(core: k8s.CoreV1Api, hr: dict[str, Any]) -> str:
    meta = hr["metadata"]
    events = core.list_namespaced_event(
        meta["namespace"], field_selector=f"involvedObject.name={meta['name']}"
    )
    return json.dumps(hr.get("status")) + " ".join(str(e.message) for e in events.items)


def resyncs(operator: Operator) -> int:
    return operator.log().count("Timer 'resync' succeeded")


def test_the_hostile_corpus_is_answered_and_nothing_runs(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
    registry: Registry,
    kubeconfig: Path,
    tmp_path: Path,
    app: str,  # noqa: F811 - the image repository fixture
) -> None:
    canary = tmp_path / "canary-smuggled-command-ran"
    ctx = Context(canary=canary, chart_repository=chart_repo.url, image=app)
    entries = corpus(ctx)
    assert (
        len(entries) >= 40 + 11
    )  # beyond the eleven of test_reconciler and the objects of test_hostile_objects
    assert len({entry.id for entry in entries}) == len(entries)
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    for entry in entries:
        for name, text in entry.config_maps.items():
            create_config_map(core, namespace, name, {"values.yaml": text})
    operator = start_operator(resync_interval=3)

    stored: dict[str, Hostile] = {}
    refusals: dict[str, str] = {}
    for index, entry in enumerate(entries):
        name = f"h{index:02d}"
        body = body_of(entry, name, chart)
        try:
            create_hr(custom, namespace, body)
        except ApiException as error:
            refusals[entry.id] = f"{error.status} {error.body}"
            assert isinstance(entry.answer, Refused), f"{entry.id}: refused: {error.status} {error.body}"
            assert error.status == entry.answer.status, f"{entry.id}: {error.status} {error.body}"
            assert entry.answer.field in str(error.body), f"{entry.id}: {error.body}"
            continue
        assert not isinstance(entry.answer, Refused), f"{entry.id}: stored, but should be refused"
        stored[body["metadata"]["name"]] = entry
    create_hr(custom, namespace, helmrelease("after-the-corpus", chart, {"message": "fine"}))

    for name, entry in stored.items():
        answer = entry.answer
        if isinstance(answer, Fails):
            hr = wait_for_hr(
                custom,
                namespace,
                name,
                explained(answer.reason),
                operator=operator,
                timeout=180,
                what=f"{entry.id}: Ready=False with reason {answer.reason}",
            )
            messages = [str(condition(hr, kind).get("message")) for kind in EXPLAINING]
            assert any(answer.message in message for message in messages), (entry.id, messages)
        else:
            hr = wait_for_hr(
                custom, namespace, name, ready, operator=operator, timeout=180, what=f"{entry.id}: Ready"
            )
            if isinstance(answer, Installs) and answer.message is not None:
                data = core.read_namespaced_config_map(f"{namespace}-{name}", namespace).data
                assert data["message"] == answer.message, entry.id
    wait_for_hr(custom, namespace, "after-the-corpus", ready, operator=operator, timeout=180)

    # Resyncs had their chance to post again, and to log a traceback each: exactly one Warning each, no traceback.
    runs = resyncs(operator)
    operator.process.wait_until(lambda: resyncs(operator) >= runs + 2 * len(stored), 120, "two resyncs each")
    wrong: list[str] = []
    for name, entry in stored.items():
        warned = warnings_on(core, namespace, name)
        if isinstance(entry.answer, Fails):
            if [(reason, count) for reason, _, count in warned] != [(entry.answer.reason, 1)]:
                wrong.append(f"{entry.id}: Warning Events {warned}")
            if entry.answer.hidden is not None:
                written = everything_about(core, get_hr(custom, namespace, name)) + operator.log()
                if entry.answer.hidden in written:
                    wrong.append(f"{entry.id}: {entry.answer.hidden!r} shown")
        elif warned:
            wrong.append(f"{entry.id}: Warning Events {warned}")
    assert wrong == [], "\n".join(wrong)
    log = operator.log()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    assert operator.process.running

    # One cycle of the real sidecar over the same namespace: it warns about what it cannot act on, moves nothing
    # there, and neither crashes nor logs a traceback.
    before = {name: get_hr(custom, namespace, name)["spec"].get("values") for name in stored}
    result = helmrelease_cli(*sidecar_args(kubeconfig, namespace, registry, "--once"), timeout=180)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for name, entry in stored.items():
        if isinstance(entry.answer, SidecarWarns):
            warned = warnings_on(core, namespace, name)
            assert [reason for reason, _, _ in warned] == [entry.answer.reason], (entry.id, warned)
            assert entry.answer.message in warned[0][1], (entry.id, warned)
            assert get_hr(custom, namespace, name)["spec"]["values"] == before[name], entry.id
    assert not canary.exists(), "a command smuggled in by the corpus ran"
    hr = get_hr(custom, namespace, "after-the-corpus")
    assert ready(hr)
    counts = {
        kind.__name__: sum(isinstance(e.answer, kind) for e in entries)
        for kind in (Refused, Fails, Installs, SidecarWarns)
    }
    print(f"\nhostile corpus: {len(entries)} entries, {counts}")
