"""Rescans on push: a burst is one rescan, only the pushed repositories' images move, polling is untouched."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.automation.fakes import FakeKube, FakeRegistry, at, release

from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.notifications import Pushed
from helmrelease.automation.push import PushRescans
from helmrelease.automation.service import ImagePolicyService, ImagePolicySettings
from helmrelease.automation.webhooks import WebhookMetrics
from helmrelease.images.reference import CanonicalName

APP = "reg.example.com/team/app"
API = "reg.example.com/team/api"
OTHER = "reg.example.com/team/other"
APP_ONLY = {"fluxcd.io/automated": "true", "fluxcd.io/tag.app": "semver:~1.0"}
AUTOMATED = {**APP_ONLY, "fluxcd.io/tag.api": "semver:~1.0"}


def name(text: str) -> CanonicalName:
    host, _, path = text.partition("/")
    return CanonicalName(host, path)


def push(*texts: str) -> tuple[Pushed, ...]:
    return tuple(Pushed(name(text), "1.0.1") for text in texts)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[frozenset[CanonicalName]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, names: frozenset[CanonicalName]) -> None:
        self.batches.append(names)
        self.started.set()
        await self.release.wait()


def rescans(metrics: CollectorRegistry) -> float:
    return metrics.get_sample_value("helmrelease_webhook_rescans_total") or 0.0


async def test_a_burst_of_pushes_is_one_rescan_of_every_repository_pushed() -> None:
    metrics = CollectorRegistry()
    recorder = Recorder()
    pushes = PushRescans(recorder, WebhookMetrics.create(metrics), settle=0.05)
    stop = asyncio.Event()
    worker = asyncio.create_task(pushes.run(stop))
    for _ in range(20):
        pushes.notify(push(APP))
    pushes.notify(push(API, APP))
    await asyncio.wait_for(recorder.started.wait(), 5)
    stop.set()
    await asyncio.wait_for(worker, 5)
    assert recorder.batches == [frozenset({name(APP), name(API)})]
    assert rescans(metrics) == 1


async def test_pushes_during_a_rescan_gather_for_the_next_one() -> None:
    metrics = CollectorRegistry()
    recorder = Recorder()
    recorder.release.clear()
    pushes = PushRescans(recorder, WebhookMetrics.create(metrics), settle=0)
    stop = asyncio.Event()
    worker = asyncio.create_task(pushes.run(stop))
    pushes.notify(push(APP))
    await asyncio.wait_for(recorder.started.wait(), 5)
    recorder.started.clear()
    for text in (API, OTHER, API):
        pushes.notify(push(text))
    assert pushes.pending == {name(API), name(OTHER)}
    recorder.release.set()
    await asyncio.wait_for(recorder.started.wait(), 5)
    stop.set()
    await asyncio.wait_for(worker, 5)
    assert recorder.batches == [frozenset({name(APP)}), frozenset({name(API), name(OTHER)})]


async def test_a_failing_rescan_is_logged_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[frozenset[CanonicalName]] = []

    async def failing(names: frozenset[CanonicalName]) -> None:
        calls.append(names)
        raise RuntimeError("boom")

    pushes = PushRescans(failing, WebhookMetrics.create(CollectorRegistry()), settle=0)
    pushes.notify(push(APP))
    with caplog.at_level(logging.ERROR):
        assert await pushes.rescan_pending() == {name(APP)}
    pushes.notify(push(API))
    assert await pushes.rescan_pending() == {name(API)}
    assert calls == [{name(APP)}, {name(API)}]
    assert "push rescan of reg.example.com/team/app failed" in caplog.text


async def test_pending_repositories_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    pushes = PushRescans(Recorder(), WebhookMetrics.create(CollectorRegistry()), max_pending=2)
    with caplog.at_level(logging.WARNING):
        pushes.notify(push(APP, API, OTHER))
        pushes.notify(push(APP))
    assert len(pushes.pending) == 2
    assert "left to the next scan cycle" in caplog.text


async def test_nothing_pending_is_no_rescan() -> None:
    recorder = Recorder()
    pushes = PushRescans(recorder, WebhookMetrics.create(CollectorRegistry()))
    assert await pushes.rescan_pending() == frozenset()
    assert recorder.batches == []


@pytest.mark.parametrize(("settle", "pending"), [(-1.0, 1), (0.0, 0)])
def test_settings_are_checked(settle: float, pending: int) -> None:
    with pytest.raises(ValueError, match="must"):
        PushRescans(
            Recorder(), WebhookMetrics.create(CollectorRegistry()), settle=settle, max_pending=pending
        )


# --- the service's rescan: only the pushed repository's images, in every release that uses them -----------


def service(kube: FakeKube, registry: FakeRegistry) -> ImagePolicyService:
    return ImagePolicyService(
        kube,
        registry,
        settings=ImagePolicySettings(),
        metrics=AutomationMetrics.create(CollectorRegistry()),
    )


async def test_a_rescan_moves_only_the_pushed_repository_in_every_release_using_it() -> None:
    registry = FakeRegistry(
        {
            APP: {"1.0.0": at(1), "1.0.1": at(2)},
            API: {"1.0.0": at(1), "1.0.1": at(2)},
            OTHER: {"1.0.0": at(1), "1.0.1": at(2)},
        }
    )
    two = {"app": {"image": f"{APP}:1.0.0"}, "api": {"image": f"{API}:1.0.0"}}
    kube = FakeKube().add(
        release("both", two, AUTOMATED),
        release("app-only", {"app": {"image": f"{APP}:1.0.0"}}, APP_ONLY),
        release(
            "other",
            {"image": f"{OTHER}:1.0.0"},
            {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:~1.0"},
        ),
        release("held", {"app": {"image": f"{APP}:1.0.0"}}, {**APP_ONLY, "fluxcd.io/locked": "true"}),
    )
    report = await service(kube, registry).rescan(frozenset({name(APP)}))

    assert sorted(str(outcome.release) for outcome in report.releases) == [
        "apps/app-only",
        "apps/both",
        "apps/held",
    ]
    assert kube.values("both") == {"app": {"image": f"{APP}:1.0.1"}, "api": {"image": f"{API}:1.0.0"}}
    assert kube.values("app-only") == {"app": {"image": f"{APP}:1.0.1"}}
    assert kube.values("held") == {"app": {"image": f"{APP}:1.0.0"}}
    assert kube.values("other") == {"image": f"{OTHER}:1.0.0"}
    assert {repository for _, repository in registry.requests} == {APP}  # nothing else was asked


async def test_a_rescan_of_an_unused_repository_patches_nothing() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.1": at(2)}})
    kube = FakeKube().add(release("app", {"app": {"image": f"{APP}:1.0.0"}}, APP_ONLY))
    report = await service(kube, registry).rescan(frozenset({name(OTHER)}))
    assert report.releases == ()
    assert kube.calls["patch"] == 0
    assert registry.requests == {}


async def test_a_rescan_stays_in_the_sidecars_namespaces() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.1": at(2)}})
    values = {"app": {"image": f"{APP}:1.0.0"}}
    kube = FakeKube().add(
        release("mine", values, APP_ONLY, namespace="team-a"),
        release("theirs", values, APP_ONLY, namespace="team-b"),
    )
    scoped = ImagePolicyService(
        kube,
        registry,
        settings=ImagePolicySettings(namespaces=("team-a",)),
        metrics=AutomationMetrics.create(CollectorRegistry()),
    )
    await scoped.rescan(frozenset({name(APP)}))
    assert kube.values("mine", "team-a") == {"app": {"image": f"{APP}:1.0.1"}}
    assert kube.values("theirs", "team-b") == values
