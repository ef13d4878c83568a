"""A canary secret, used every way a HelmRelease can use a Secret, never shows where people and tools look.

The canary travels through ``valuesFrom[].secretKeyRef``, the deprecated ``valueFileSecrets``, a chart pull secret
(``chart.chartPullSecret`` against a chart repository behind basic auth) and a registry pull secret for the
image-policy sidecar (right and wrong). One release installs and upgrades with all of them; one fails to install
because the API server refuses a label that holds the canary and quotes it in the error helm prints. The operator
runs at DEBUG level; the canary (and its base64 form) must appear in none of its log, the Events, the status, its
/metrics, nor the sidecar's output.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from tests.integration.test_image_policy import protected_app  # noqa: F401 - a fixture
from tests.integration.test_image_policy_cli import helmrelease_cli
from tests.support import charts as charts_mod
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    StartOperator,
    condition,
    create_hr,
    create_secret,
    get_hr,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
)
from tests.support.registry import Registry

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

#: One token per run, spelled so that nothing else in a log could contain it by chance.
CANARY = f"canary{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def canary_chart_repo(helm: Helm, workdir: Path) -> Iterator[ChartRepository]:
    """The test charts behind basic auth whose password is the canary."""
    repo = charts_mod.serve_repository(
        helm, workdir / "chart-repo-canary", username="reader", password=f"{CANARY}-pull"
    )
    yield repo
    repo.stop()


def spellings(secret: str) -> list[str]:
    """The secret as it is, and as base64 (how a Secret's data, or a basic-auth header, carries it)."""
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"reader:{secret}".encode()).decode(),
    ]


def leaks(text: str, *secrets: str) -> list[str]:
    return [spelling for secret in secrets for spelling in spellings(secret) if spelling in text]


def dockerconfig(core: k8s.CoreV1Api, namespace: str, name: str, host: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = json.dumps({"auths": {host: {"username": user, "password": password, "auth": auth}}})
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name),
            type="kubernetes.io/dockerconfigjson",
            data={".dockerconfigjson": base64.b64encode(config.encode()).decode()},
        ),
    )


def test_a_canary_secret_never_appears_in_logs_events_status_metrics_or_the_sidecar_output(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
    canary_chart_repo: ChartRepository,
    auth_registry: Registry,
    registry: Registry,
    kubeconfig: Path,
    protected_app: str,  # noqa: F811 - the image repository fixture
) -> None:
    values_secret, legacy_secret, quoted = f"{CANARY}-values", f"{CANARY}-legacy", f"{CANARY}-label"
    create_secret(core, namespace, "values", {"values.yaml": f"message: {values_secret}\n"})
    create_secret(core, namespace, "legacy", {"values.yaml": f"legacy: {legacy_secret}\n"})
    create_secret(core, namespace, "pull", {"username": "reader", "password": f"{CANARY}-pull"})
    # Not a valid label value (a quote and a space): the API server refuses it and quotes it in its error.
    create_secret(core, namespace, "label", {"values.yaml": f"tier: '{quoted} \"x\"'\n"})
    operator = start_operator("--log-level", "DEBUG")

    chart = {
        "repository": canary_chart_repo.url,
        "name": "app",
        "version": "0.1.0",
        "chartPullSecret": {"name": "pull"},
    }
    create_hr(
        custom,
        namespace,
        helmrelease(
            "uses",
            chart,
            {"replicas": 1},
            valueFileSecrets=[{"name": "legacy"}],
            valuesFrom=[{"secretKeyRef": {"name": "values"}}],
        ),
    )
    validated = {"repository": chart_repo.url, "name": "validated", "version": "0.1.0"}
    create_hr(
        custom, namespace, helmrelease("quotes", validated, valuesFrom=[{"secretKeyRef": {"name": "label"}}])
    )

    wait_for_hr(custom, namespace, "uses", ready, operator=operator, what="Ready")
    assert core.read_namespaced_config_map(f"{namespace}-uses", namespace).data["message"] == values_secret
    # An upgrade: the Secret changes, the release follows (one more pass through every path that reads it).
    core.patch_namespaced_secret(
        "values", namespace, {"stringData": {"values.yaml": f"message: {values_secret}2\n"}}
    )
    custom.patch_namespaced_custom_object(
        "helm.fluxcd.io", "v1", namespace, "helmreleases", "uses", {"spec": {"values": {"replicas": 2}}}
    )
    # The Secret's change and the spec's may land in one upgrade or in two (the Secret's watch event can start a
    # pass before the spec's): either way the release ends with both.
    wait_for_hr(
        custom,
        namespace,
        "uses",
        lambda hr: (
            ready(hr)
            and hr["status"].get("observedGeneration") == 2
            and (core.read_namespaced_config_map(f"{namespace}-uses", namespace).data or {}).get("message")
            == f"{values_secret}2"
        ),
        operator=operator,
        what="upgraded with the new Secret and spec",
    )
    hr = wait_for_condition(
        custom, namespace, "quotes", "Released", reason="InstallFailed", operator=operator
    )
    assert "***" in condition(hr, "Released")["message"]  # helm quoted the label, masked

    secrets = (values_secret, legacy_secret, quoted, f"{CANARY}-pull", CANARY)
    events = core.list_namespaced_event(namespace).items
    assert events, "the releases posted Events"
    places = {
        "operator log (DEBUG)": operator.log(),
        "Events": "\n".join(f"{e.reason} {e.message}" for e in events),
        "status": json.dumps([get_hr(custom, namespace, name).get("status") for name in ("uses", "quotes")]),
        "metrics": operator.scrape(),
    }
    assert "DEBUG" in places["operator log (DEBUG)"]
    assert {place: leaks(text, *secrets) for place, text in places.items()} == {place: [] for place in places}

    # The sidecar, at DEBUG, with a registry pull secret that works and one whose (canary) password is wrong.
    assert auth_registry.username
    assert auth_registry.password
    dockerconfig(core, namespace, "right", auth_registry.host, auth_registry.username, auth_registry.password)
    dockerconfig(core, namespace, "wrong", auth_registry.host, auth_registry.username, f"{CANARY}-registry")
    for name, secret in (("scan-right", "right"), ("scan-wrong", "wrong")):
        body = helmrelease(
            name,
            {"repository": "http://charts.example.invalid/", "name": "app", "version": "0.1.0"},
            {"image": {"repository": protected_app, "tag": "1.0.0"}},
        )
        body["metadata"]["annotations"] = {
            "fluxcd.io/automated": "true",
            "image.helm.fluxcd.io/pull-secret": secret,
        }
        body["spec"]["suspend"] = False
        create_hr(custom, namespace, body)
    result = helmrelease_cli(
        "image-policy",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--insecure-registry",
        auth_registry.host,
        "--insecure-registry",
        registry.host,
        "--log-level",
        "DEBUG",
        "--once",
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert get_hr(custom, namespace, "scan-right")["spec"]["values"]["image"]["tag"] == "1.0.1", output
    assert "scan-wrong" in output  # the failure was reported ...
    sidecar_places = {
        "sidecar output (DEBUG)": output,
        "Events after the sidecar": "\n".join(
            f"{e.reason} {e.message}" for e in core.list_namespaced_event(namespace).items
        ),
    }
    # ... without the password it was made with, nor the one that worked.
    assert {
        place: leaks(text, *secrets, f"{CANARY}-registry", auth_registry.password)
        for place, text in sidecar_places.items()
    } == {place: [] for place in sidecar_places}
