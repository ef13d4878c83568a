"""The operator's /metrics, scraped from the real operator process while it installs, corrects and deletes."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families
from tests.support.charts import ChartRepository
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    StartOperator,
    create_hr,
    delete_and_wait_gone,
    find_hr,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.tcpproxy import TcpProxy
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(operator: Operator) -> Samples:
    """Every sample of one scrape, by name and labels, as Prometheus parses the exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(operator.scrape())
        for sample in family.samples
    }


def value(found: Samples, metric: str, **labels: str) -> float | None:
    return found.get((metric, frozenset(labels.items())))


def of_object(found: Samples, namespace: str, name: str) -> list[tuple[str, dict[str, str]]]:
    """The per-object series of one HelmRelease."""
    return [
        (metric, dict(labels))
        for metric, labels in found
        if metric in ("helmrelease_condition", "helmrelease_info")
        and ("namespace", namespace) in labels
        and ("name", name) in labels
    ]


def scraped(operator: Operator, what: str, holds: Callable[[Samples], bool]) -> Samples:
    """Scrape until `holds(samples)`; the last scrape."""

    def probe() -> Samples:
        found = samples(operator)
        return found if holds(found) else {}

    return eventually(probe, 60, what, context=operator.tail)


def test_metrics_follow_a_helmrelease_from_install_through_drift_to_deletion(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    operator = start_operator(resync_interval=2)
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    create_hr(custom, namespace, helmrelease("web", chart, {"message": "declared"}))
    create_hr(custom, namespace, helmrelease("other", chart, {"message": "stays"}))
    wait_for_hr(custom, namespace, "web", ready, operator=operator)
    wait_for_hr(custom, namespace, "other", ready, operator=operator)

    ready_web = {"namespace": namespace, "name": "web", "type": "Ready"}
    info_web = {
        "namespace": namespace,
        "name": "web",
        "release": f"{namespace}-web",
        "chart": "app",
        "version": "0.1.0",
        "revision": "0.1.0",
    }
    found = scraped(
        operator,
        "Ready=True and the info of HelmRelease web in /metrics",
        lambda s: value(s, "helmrelease_condition", **ready_web, status="True") == 1,
    )
    assert value(found, "helmrelease_condition", **ready_web, status="False") == 0
    assert value(found, "helmrelease_condition", **ready_web, status="Unknown") == 0
    assert value(found, "helmrelease_info", **info_web) == 1
    assert value(found, "helmrelease_helm_actions_total", action="install", result="success") == 2
    assert value(found, "helmrelease_helm_action_duration_seconds_count", action="install") == 2
    assert (value(found, "helmrelease_reconcile_duration_seconds_count", result="success") or 0) >= 2
    assert value(found, "helmrelease_helm_operations_waiting") == 0
    assert value(found, "helmrelease_workers") == 4

    # Drift: a resync finds the edited ConfigMap and upgrades it back.
    core.patch_namespaced_config_map(f"{namespace}-web", namespace, {"data": {"message": "edited by hand"}})
    found = scraped(
        operator,
        "a drift detected and corrected",
        lambda s: (value(s, "helmrelease_drift_corrections_total") or 0) >= 1,
    )
    assert (value(found, "helmrelease_drift_detections_total") or 0) >= 1
    assert (value(found, "helmrelease_helm_actions_total", action="upgrade", result="success") or 0) >= 1

    delete_and_wait_gone(custom, namespace, "web", operator=operator)
    found = scraped(
        operator,
        "the series of the deleted HelmRelease web to be gone",
        lambda s: not of_object(s, namespace, "web"),
    )
    assert value(found, "helmrelease_helm_actions_total", action="uninstall", result="success") == 1
    assert (
        value(found, "helmrelease_condition", namespace=namespace, name="other", type="Ready", status="True")
        == 1
    )
    assert of_object(found, namespace, "other"), "the other HelmRelease keeps its series"


def test_a_helmrelease_deleted_while_the_operator_cannot_see_it_loses_its_series(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    api_client: k8s.ApiClient,
    kubeconfig: Path,
    workdir: Path,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    """Deleted during an outage: the series go once the operator sees again. After a short outage the resumed
    watch says DELETED; after one longer than etcd's history (a relist, no DELETED) the series expire three resync
    intervals on, which the unit tests show (test_an_object_nothing_refreshes_loses_its_series_...)."""
    server = urlsplit(api_client.configuration.host)
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 443).start()
    try:
        proxied = proxy.kubeconfig(kubeconfig, workdir / f"{namespace}-proxied")
        operator = start_operator(resync_interval=2, through=proxied)
        chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
        for name in ("gone", "kept"):
            create_hr(custom, namespace, helmrelease(name, chart, {"message": name}))
        for name in ("gone", "kept"):
            wait_for_hr(custom, namespace, name, ready, operator=operator)
        scraped(operator, "series of both HelmReleases", lambda s: bool(of_object(s, namespace, "gone")))
        proxy.cut()
        # Deleted behind the operator's back: without its finalizer, the object goes at once.
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "gone", {"metadata": {"finalizers": None}}
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
        eventually(lambda: find_hr(custom, namespace, "gone") is None, 30, "HelmRelease gone to be gone")
        assert of_object(samples(operator), namespace, "gone"), "the operator could not have seen it yet"
        proxy.restore()
        found = scraped(
            operator,
            "the series of the HelmRelease deleted unseen to go",
            lambda s: not of_object(s, namespace, "gone"),
        )
        assert of_object(found, namespace, "kept"), "the one still there keeps its series"
    finally:
        proxy.stop()


def test_a_metrics_port_in_use_stops_the_operator_with_one_line(workdir: Path, kubeconfig: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - the operator binds every interface
        taken.listen()
        port = taken.getsockname()[1]
        (workdir / "port-in-use").mkdir(exist_ok=True)
        operator = Operator(
            workdir / "port-in-use", kubeconfig, ["unused"], extra_args=("--metrics-port", str(port))
        )
        operator.process.start()
        assert operator.process.wait_until_exited(60) == 1
    assert f"cannot serve metrics on port {port}: " in operator.log()
    assert "Traceback" not in operator.log()
