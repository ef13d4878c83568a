"""What the production reconcile pass records in its metrics, driven against in-memory Helm and Kubernetes."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.reconcile.fakes import FakeCharts, FakeHelm, LiveIndex, NoUrls
from tests.unit.reconcile.test_reconcile_pass import BAD, MANIFEST, NAME, NAMESPACE, Harness

from helmrelease.adapters.charts import ChartSource, FetchedChart
from helmrelease.reconcile import service
from helmrelease.reconcile.errors import ReconcileError
from helmrelease.reconcile.metrics import OperatorMetrics
from helmrelease.reconcile.service import Reconciler
from helmrelease.reconcile.settings import OperatorSettings


@dataclass
class Metered(Harness):
    """The pass harness with the reconciler's metrics on a registry of the test's own; the watch is `seen`."""

    stale_after: float | None = None
    #: The metrics' monotonic clock.
    now: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self) -> None:
        super().__post_init__()
        self.registry = CollectorRegistry()
        self.reconciler = Reconciler(
            kube=self.kube,
            helm=self.helm,
            charts=FakeCharts(self.tmp / "chart"),
            urls=NoUrls(),
            settings=OperatorSettings(state_dir=self.tmp / "state", **self.settings),
            clock=self.clock,
            metrics=OperatorMetrics.create(
                self.registry, stale_after=self.stale_after, clock=lambda: self.now[0]
            ),
        )

    def seen(self, *, deleted: bool = False) -> None:
        self.reconciler.seen(copy.deepcopy(self.kube.state.helmreleases[NAMESPACE, NAME]), deleted=deleted)

    def value(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, labels)

    def passes(self, result: str) -> float | None:
        return self.value("helmrelease_reconcile_duration_seconds_count", result=result)

    def actions(self, action: str, result: str) -> float | None:
        return self.value("helmrelease_helm_actions_total", action=action, result=result)

    def series(self, kind: str, status: str) -> float | None:
        return self.value("helmrelease_condition", namespace=NAMESPACE, name=NAME, type=kind, status=status)


@pytest.fixture
def metered(tmp_path: Path) -> Metered:
    return Metered(tmp_path, LiveIndex)


async def test_an_install_is_one_successful_pass_and_one_install_and_the_series_follow_it(
    metered: Metered,
) -> None:
    metered.apply()
    metered.seen()
    assert metered.series("Ready", "True") is None, "no status yet: no condition series"
    await metered.reconcile()
    assert (metered.passes("success"), metered.passes("failure"), metered.passes("error")) == (1, 0, 0)
    assert metered.actions("install", "success") == 1
    assert metered.value("helmrelease_helm_action_duration_seconds_count", action="install") == 1
    assert (metered.series("Ready", "True"), metered.series("Ready", "False")) == (1, 0)
    info = {"release": "apps-web", "chart": "podinfo", "version": "6.5.0", "revision": "6.5.0"}
    assert metered.value("helmrelease_info", namespace=NAMESPACE, name=NAME, **info) == 1
    metered.seen(deleted=True)
    assert metered.series("Ready", "True") is None
    assert metered.value("helmrelease_info", namespace=NAMESPACE, name=NAME, **info) is None


async def test_a_failed_upgrade_is_a_failed_pass(metered: Metered) -> None:
    metered.apply()
    await metered.reconcile()
    metered.apply(BAD)
    metered.seen()
    await metered.reconcile()
    assert metered.actions("upgrade", "failure") == 1
    assert (metered.passes("success"), metered.passes("failure")) == (1, 1)
    assert (metered.series("Ready", "False"), metered.series("Released", "False")) == (1, 1)


async def test_an_invalid_helmrelease_is_a_failed_pass_without_helm(metered: Metered) -> None:
    metered.apply(releaseName="Not_A_Name")
    ran = await metered.reconcile()
    assert ran.error is not None
    assert metered.passes("failure") == 1
    assert sum(metered.actions(a, "success") or 0 for a in ("install", "upgrade")) == 0


async def test_an_unexpected_exception_is_an_error_pass(
    metered: Metered, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: FakeCharts, source: ChartSource) -> FetchedChart:
        raise RuntimeError("a bug")

    monkeypatch.setattr(FakeCharts, "fetch", broken)
    metered.apply()
    with pytest.raises(RuntimeError):
        await metered.reconcile()
    assert (metered.passes("error"), metered.passes("failure")) == (1, 0)


async def test_drift_found_and_corrected_is_counted_once_each(metered: Metered) -> None:
    metered.helm.state.manifest = MANIFEST
    metered.apply()
    await metered.reconcile()
    live = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-config"},
        "data": {"greeting": "hello"},
    }
    metered.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = live
    await metered.reconcile(check_drift=True)
    assert metered.status.last_drift_check == metered.clock.now, "the resync did look for drift"
    assert (
        metered.value("helmrelease_drift_detections_total"),
        metered.value("helmrelease_drift_corrections_total"),
    ) == (0, 0)
    live = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-config"},
        "data": {"greeting": "x"},
    }
    metered.kube.state.objects["ConfigMap", NAMESPACE, "web-config"] = live
    await metered.reconcile(check_drift=True)
    assert metered.value("helmrelease_drift_detections_total") == 1
    assert metered.value("helmrelease_drift_corrections_total") == 1
    assert metered.actions("upgrade", "success") == 1


async def test_an_uninstall_on_deletion_is_counted(metered: Metered) -> None:
    metered.apply()
    await metered.reconcile()
    await metered.finalize()
    assert metered.actions("uninstall", "success") == 1


async def test_an_action_cancelled_by_deletion_is_counted_as_cancelled(
    metered: Metered, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "DELETION_POLL", 0.01)
    started = asyncio.Event()

    async def hangs(self: FakeHelm, *args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(FakeHelm, "upgrade_install", hangs)
    metered.apply()
    body = await metered.kube.get_helmrelease(NAMESPACE, NAME)
    task = asyncio.ensure_future(metered.reconciler.reconcile(body, metered.index))
    await started.wait()
    del metered.kube.state.helmreleases[NAMESPACE, NAME]
    with pytest.raises(ReconcileError):
        await task
    assert metered.actions("install", "cancelled") == 1


async def _until(fact: Callable[[], bool]) -> None:
    """Let the other tasks run until `fact` holds (bounded: a test that would hang fails instead)."""
    for _ in range(1000):
        if fact():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def test_operations_beyond_the_worker_limit_are_counted_as_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = asyncio.Event(), []
    install = FakeHelm.upgrade_install

    async def gated(self: FakeHelm, release: str, *args: Any, **kwargs: Any) -> Any:
        entered.append(release)
        await gate.wait()
        return await install(self, release, *args, **kwargs)

    monkeypatch.setattr(FakeHelm, "upgrade_install", gated)
    harness = Metered(tmp_path, LiveIndex, {"workers": 1})
    registry, kube, reconciler = harness.registry, harness.kube, harness.reconciler
    bodies = []
    for name in ("a", "b"):
        harness.apply()
        body = kube.state.helmreleases.pop((NAMESPACE, NAME))
        body["metadata"] = {**body["metadata"], "name": name, "uid": f"uid-{name}"}
        kube.state.helmreleases[NAMESPACE, name] = body
        bodies.append(copy.deepcopy(body))

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(f"helmrelease_helm_operations_{name}")

    assert registry.get_sample_value("helmrelease_workers") == 1
    tasks = [asyncio.ensure_future(reconciler.reconcile(body, harness.index)) for body in bodies]
    await _until(lambda: len(entered) == 1 and gauge("waiting") == 1)
    assert gauge("running") == 1
    gate.set()
    await asyncio.gather(*tasks)
    assert (gauge("waiting"), gauge("running"), len(entered)) == (0, 0, 2)
    assert (
        registry.get_sample_value(
            "helmrelease_helm_actions_total", {"action": "install", "result": "success"}
        )
        == 2
    )


async def test_a_pass_keeps_the_series_of_its_object_alive(tmp_path: Path) -> None:
    metered = Metered(tmp_path, LiveIndex, stale_after=30)
    metered.apply()
    metered.seen()
    await metered.reconcile()
    metered.now[0] = 31
    assert metered.series("Ready", "True") is None, "nothing refreshed it for longer than stale_after"
    await metered.reconcile()  # a resync: refreshed at its start and end
    assert metered.series("Ready", "True") == 1
