"""Objects the apiserver accepts that once broke the operator: deep values, garbled bookkeeping, big values.

Every test runs the real operator process against the real kube-apiserver and helm. Deep objects are created and
read as raw JSON (the Python client's own ``json.loads`` fails on them, like kopf's did); the bounded decoder that
the operator uses reads them here too.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.integration.test_image_policy import AUTOMATED, app, one_cycle  # noqa: F401 - `app` is a fixture
from tests.support.charts import ChartRepository
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    StartOperator,
    condition,
    create_config_map,
    create_hr,
    events_for,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
)
from tests.support.registry import Registry
from tests.support.wait import eventually

from helmrelease.api import bounded_json
from helmrelease.api.limits import VALUES_DEPTH_MAX

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

#: What kube-apiserver accepts: Go's encoding/json stops at 10,000 levels for the whole document, and a values
#: tree of the shape below sits at level 3 (object, spec, values) with its lists from level 4.
APISERVER_DEPTH_MAX = 10_000
PREFIX = "helmrelease.helm.fluxcd.io"


@pytest.fixture
def app_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}


def deep_text(
    name: str, chart: dict[str, str], lists: int, annotations: dict[str, str] | None = None
) -> bytes:
    """A HelmRelease whose ``spec.values.x`` is ``lists`` lists inside each other (the document is lists+3 deep)."""
    body = helmrelease(name, chart, {"x": "HERE"})
    body["metadata"]["annotations"] = dict(annotations or {})
    return json.dumps(body).replace('"HERE"', "[" * lists + "1" + "]" * lists).encode()


def post_raw(api_client: k8s.ApiClient, namespace: str, text: bytes) -> tuple[int, str]:
    """POST a HelmRelease as raw JSON, through the client's authenticated connection pool."""
    url = f"{api_client.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    response = api_client.rest_client.pool_manager.request(
        "POST", url, body=text, headers={"Content-Type": "application/json", "Accept": "application/json"}
    )
    return response.status, response.data.decode()


def get_bounded(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    raw = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _preload_content=False)
    decoded: dict[str, Any] = bounded_json.loads(raw.data)
    return decoded


def wait_for_deep(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    operator: Operator,
    *,
    timeout: float = 90,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        assert operator.process.running, operator.tail()
        hr = seen["hr"] = get_bounded(custom, namespace, name)
        return hr if predicate(hr) else None

    return eventually(
        probe,
        timeout,
        f"HelmRelease {namespace}/{name} to get there",
        context=lambda: f"status: {seen.get('hr', {}).get('status')}\n{operator.tail()}",
    )


def too_deep(hr: dict[str, Any]) -> bool:
    found = condition(hr, "Ready")
    return found.get("status") == "False" and found.get("reason") == "ValuesTooDeep"


def assert_refused_as_too_deep(core: k8s.CoreV1Api, hr: dict[str, Any]) -> None:
    message = condition(hr, "Ready")["message"]
    assert message.startswith("Invalid HelmRelease: spec.values: ")
    assert f"nested more than {VALUES_DEPTH_MAX} levels deep" in message
    name = hr["metadata"]["name"]
    reasons = [reason for _, reason, _ in events_for(core, hr["metadata"]["namespace"], name)]
    assert reasons.count("ValuesTooDeep") == 1, reasons


def timer_runs(operator: Operator) -> int:
    return operator.log().count("Timer 'resync' succeeded")


def no_failures_in(log: str) -> None:
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


# --- deep values --------------------------------------------------------------------------------------------


async def test_deep_values_are_refused_and_never_stop_the_operator(
    start_operator: StartOperator,
    api_client: k8s.ApiClient,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    app: str,  # noqa: F811 - the image repository fixture
    registry: Registry,
) -> None:
    deepest = APISERVER_DEPTH_MAX - 3
    assert post_raw(api_client, namespace, deep_text("deep", app_chart, 3000))[0] == 201
    assert post_raw(api_client, namespace, deep_text("deepest", app_chart, deepest))[0] == 201
    # One level more and the apiserver refuses the object itself: nothing deeper can ever reach the operator.
    status, message = post_raw(api_client, namespace, deep_text("too-deep", app_chart, deepest + 1))
    assert (status, "exceeded max depth" in message) == (400, True), message
    create_hr(custom, namespace, helmrelease("normal", app_chart, {"message": "fine"}))

    operator = start_operator()
    wait_for_hr(custom, namespace, "normal", ready, operator=operator, what="Ready")
    for name in ("deep", "deepest"):
        assert_refused_as_too_deep(core, wait_for_deep(custom, namespace, name, too_deep, operator))

    # A restart lists the deep objects first thing: it must start, and still reconcile new releases.
    operator.stop()
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("after-restart", app_chart, {"message": "fine"}))
    wait_for_hr(custom, namespace, "after-restart", ready, operator=operator, what="Ready after the restart")
    for name in ("deep", "deepest"):
        assert_refused_as_too_deep(core, get_bounded(custom, namespace, name))  # still one Event each
    no_failures_in(operator.log())

    # The image-policy sidecar lists every HelmRelease, deep ones included, and keeps working.
    create_hr(
        custom,
        namespace,
        {
            **helmrelease("automated", app_chart, {"image": f"{app}:1.0.0"}),
            "metadata": {
                "name": "automated",
                "annotations": {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"},
            },
        },
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert report.list_failures == 0
    assert [(move.old_tag, move.new_tag) for move in report.moves] == [("1.0.0", "1.0.5")]


def test_values_600_deep_get_the_condition_and_no_traceback_loop(
    start_operator: StartOperator,
    api_client: k8s.ApiClient,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator(resync_interval=1)
    assert post_raw(api_client, namespace, deep_text("deep", app_chart, 600))[0] == 201
    hr = wait_for_deep(custom, namespace, "deep", too_deep, operator)
    assert_refused_as_too_deep(core, hr)
    # Resyncs had their chance to retry (and to log a traceback each time): none did.
    runs = timer_runs(operator)
    operator.process.wait_until(lambda: timer_runs(operator) >= runs + 3, 30, "three more resyncs")
    no_failures_in(operator.log())
    assert_refused_as_too_deep(core, get_bounded(custom, namespace, "deep"))


# --- garbled bookkeeping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "operation"),
    [(f"{PREFIX}/last-handled-configuration", "replace"), (f"{PREFIX}/reconcile.spec", "add")],
    ids=["diff-base", "progress"],
)
def test_a_garbled_bookkeeping_annotation_is_ignored_and_named_once(
    annotation: str,
    operation: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator()
    create_hr(custom, namespace, helmrelease("web", app_chart, {"message": "one"}))
    # kopf writes its diff base after the handler has written the status: wait for both.
    wait_for_hr(
        custom,
        namespace,
        "web",
        lambda hr: (
            ready(hr) and f"{PREFIX}/last-handled-configuration" in hr["metadata"].get("annotations", {})
        ),
        operator=operator,
        what="Ready, with kopf's diff base written",
    )
    path = "/metadata/annotations/" + annotation.replace("~", "~0").replace("/", "~1")
    # What a botched `kubectl apply` or a copy of `kubectl get -o yaml` can leave.
    garbled = [{"op": operation, "path": path, "value": '{"spec": {"values": {"message": "one"}'}]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "web", garbled, _content_type="application/json-patch+json"
    )
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "web", {"spec": {"values": {"message": "two"}}}
    )
    wait_for_hr(
        custom,
        namespace,
        "web",
        lambda hr: ready(hr) and hr["metadata"]["generation"] == 2,
        operator=operator,
        what="Ready at generation 2",
    )
    release = core.read_namespaced_config_map(f"{namespace}-web", namespace)
    assert release.data["message"] == "two"
    warnings = [
        (kind, message)
        for kind, reason, message in events_for(core, namespace, "web")
        if reason == "UnreadableAnnotation"
    ]
    assert len(warnings) == 1, warnings
    kind, message = warnings[0]
    assert kind == "Warning"
    assert message.startswith(f"Annotation {annotation} is not readable (not JSON: ")
    assert message.endswith("it was ignored, and the release is reconciled from the spec")
    no_failures_in(operator.log())


# --- big values ---------------------------------------------------------------------------------------------


def test_values_over_the_annotation_limit_install_without_an_error_loop(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator(resync_interval=1)
    big = {"message": "big", "blobs": [f"{index:06d}" + "x" * 1000 for index in range(300)]}  # ~300 KiB
    create_hr(custom, namespace, helmrelease("big", app_chart, big))
    # kopf writes its diff base after the handler that made the release Ready returns: wait for both.
    hr = wait_for_hr(
        custom,
        namespace,
        "big",
        lambda hr: (
            ready(hr) and f"{PREFIX}/last-handled-configuration" in hr["metadata"].get("annotations", {})
        ),
        operator=operator,
        what="Ready and kopf's diff base written",
        timeout=120,
    )
    annotations = hr["metadata"]["annotations"]
    assert len(json.dumps(annotations)) < 2048, annotations  # digests, not the spec
    runs = timer_runs(operator)
    operator.process.wait_until(lambda: timer_runs(operator) >= runs + 3, 30, "three more resyncs")
    log = operator.log()
    assert "Patching failed" not in log
    # A PATCH of an annotation over the limit is what failed; a fresh API server may still answer the first
    # watch with 429 "storage is (re)initializing", which kopf retries and which has nothing to do with size.
    assert not [line for line in log.splitlines() if "Request attempt" in line and "PATCH" in line], log
    no_failures_in(log)


def test_values_too_big_for_helm_storage_get_a_clear_condition(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator()
    # ~1.2 MiB of random base64 text: gzip cannot shrink it below Helm's 1 MiB Secret.
    noise = base64.b64encode(os.urandom(900 * 1024)).decode()
    chunks = [noise[start : start + 4096] for start in range(0, len(noise), 4096)]
    create_hr(custom, namespace, helmrelease("huge", app_chart, {"message": "huge", "noise": chunks}))
    hr = wait_for_condition(
        custom,
        namespace,
        "huge",
        "Ready",
        status="False",
        reason="InstallFailed",
        operator=operator,
        timeout=120,
    )
    message = condition(hr, "Ready")["message"]
    assert "too large for Helm's release storage" in message, message
    assert re.search(r"1 MiB", message), message


# --- planned retries ----------------------------------------------------------------------------------------


def test_a_planned_retry_is_a_warning_line_and_no_kopf_event(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator()
    values_from = [{"configMapKeyRef": {"name": "later", "key": "values.yaml"}}]
    create_hr(custom, namespace, helmrelease("web", app_chart, {"message": "one"}, valuesFrom=values_from))
    wait_for_condition(
        custom, namespace, "web", "Ready", status="False", reason="ValuesError", operator=operator
    )
    retry = "kopf.objects: Handler 'reconcile' failed temporarily: "
    operator.process.wait_until(lambda: retry in operator.log(), 30, "kopf's retry line")
    # The values appear: the release reconciles (and kopf's poster had all that time to post an Event).
    create_config_map(core, namespace, "later", {"values.yaml": "message: two\n"})
    wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready")
    lines = [line for line in operator.log().splitlines() if retry in line]
    assert lines, operator.tail()
    assert all(" WARNING " in line for line in lines), lines
    no_failures_in(operator.log())
    kinds = {(kind, reason) for kind, reason, _ in events_for(core, namespace, "web")}
    assert ("Warning", "ValuesError") in kinds
    assert not {entry for entry in kinds if entry[1] == "Logging"}, kinds  # kopf's own Events


#: Under a kilobyte of YAML that stands for 387 million strings when walked as a tree ("billion laughs").
BILLION_LAUGHS = "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))


def test_values_whose_yaml_aliases_never_end_are_refused_and_others_install(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    """Before the aliases were measured, walking these values held the operator's event loop for hours."""
    create_config_map(core, namespace, "laughs", {"values.yaml": BILLION_LAUGHS})
    create_config_map(core, namespace, "ouroboros", {"values.yaml": "a: &a [1, *a]\n"})
    operator = start_operator()
    for name in ("laughs", "ouroboros"):
        create_hr(
            custom, namespace, helmrelease(name, app_chart, valuesFrom=[{"configMapKeyRef": {"name": name}}])
        )
    create_hr(custom, namespace, helmrelease("healthy", app_chart, {"message": "fine"}))
    for name, message in (("laughs", "aliases expand"), ("ouroboros", "refers to itself")):
        hr = wait_for_condition(custom, namespace, name, "Released", reason="ValuesError", operator=operator)
        assert message in condition(hr, "Released")["message"]
        assert f"ConfigMap {name} key values.yaml" in condition(hr, "Released")["message"]
    wait_for_hr(custom, namespace, "healthy", ready, operator=operator, what="Ready")
    no_failures_in(operator.log())
