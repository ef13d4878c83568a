"""What image scans cost against the real registry, counted by the sidecar's own request metrics.

A warm cycle lists tags and sends a few HEADs; a restart with the state directory is warm; a re-pushed
current tag and a new tag are noticed, the new one looked up once; a stalled registry does not hold back the
decisions of another; a registry announcing a pull budget is never pushed into a 429.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry
from tests.integration.test_image_policy import Releases
from tests.support.fault_proxy import FaultProxy, PullBudget
from tests.support.registry import ImagePusher, Registry, requests_by_kind, utc
from tests.support.wait import eventually

from helmrelease.adapters.kube import KubeClient
from helmrelease.adapters.registry import RegistryConfig, RegistryMetrics, RetryPolicy
from helmrelease.adapters.registry.tagcache import FILE_NAME, TagCacheFile
from helmrelease.automation import AutomationMetrics, ImagePolicyService, ImagePolicySettings, RegistryPool
from helmrelease.automation.lookups import RecheckBudget
from helmrelease.automation.service import CycleReport

pytestmark = pytest.mark.usefixtures("crd_installed")

TAGS = 20
INTERVAL = 300.0
ROLLING = RecheckBudget(INTERVAL).rolling(TAGS)  # per image and cycle, at the default period
GLOB = {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "glob:1.0.*"}
STAR = {"fluxcd.io/automated": "true"}  # the default policy, glob:*
RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)


def tag(n: int) -> str:
    return f"1.0.{n}"


def push_repository(pusher: ImagePusher, tags: int = TAGS) -> str:
    """A fresh repository whose tag ``1.0.n`` is built later the greater ``n`` is."""
    repository = f"cost/app-{uuid.uuid4().hex[:8]}"
    for n in range(tags):
        pusher.push(repository, tag(n), created=utc(1000 - n))
    return repository


@pytest.fixture
def releases(custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api, namespace: str) -> Releases:
    return Releases(custom, core, namespace)


@dataclass
class Sidecar:
    """The image-policy loop as ``helmrelease image-policy`` wires it (state directory included), scoped to
    the test's namespace; a new ``Sidecar`` over the same ``state_dir`` is a restart."""

    api_client: k8s.ApiClient
    namespace: str
    state_dir: Path
    hosts: tuple[str, ...]
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.pool = RegistryPool(
            RegistryConfig(insecure_hosts=frozenset(self.hosts), retry=RETRY),
            RegistryMetrics.create(self.metrics),
            state=TagCacheFile(self.state_dir / FILE_NAME),
        )
        self.service = ImagePolicyService(
            KubeClient(self.api_client),
            self.pool,
            settings=ImagePolicySettings(interval=INTERVAL, namespaces=(self.namespace,)),
            metrics=AutomationMetrics.create(self.metrics),
        )

    async def cycle(self) -> tuple[CycleReport, Counter[str]]:
        """One cycle, and the registry requests it made by kind."""
        before = requests_by_kind(self.metrics)
        report = await self.service.run_cycle()
        assert not report.failed, report
        return report, requests_by_kind(self.metrics) - before

    async def close(self) -> None:
        await self.pool.close()


@pytest.fixture
async def sidecars(
    api_client: k8s.ApiClient, namespace: str, registry: Registry, tmp_path: Path
) -> AsyncIterator[Any]:
    started: list[Sidecar] = []

    def start(*hosts: str) -> Sidecar:
        sidecar = Sidecar(api_client, namespace, tmp_path / "state", (registry.host, *hosts))
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        await sidecar.close()


def image_tag(releases: Releases, name: str) -> str:
    image: str = releases.values(name)["image"]
    return image.rpartition(":")[2]


def warm_budget(images: int) -> int:
    """The manifest requests a cycle with nothing new may make: current and best per image, and the slice."""
    return images * (2 + ROLLING)


async def test_a_second_cycle_costs_the_tag_list_and_a_few_heads(
    sidecars: Any, releases: Releases, pusher: ImagePusher, registry: Registry
) -> None:
    repository = push_repository(pusher)
    image = f"{registry.host}/{repository}"
    releases.create("glob", {"image": f"{image}:{tag(0)}"}, GLOB)
    releases.create("star", {"image": f"{image}:{tag(0)}"}, STAR)
    sidecar = sidecars()
    first, cold = await sidecar.cycle()
    assert len(first.moves) == 2
    assert (image_tag(releases, "glob"), image_tag(releases, "star")) == (tag(TAGS - 1), tag(TAGS - 1))
    # cold: one tag list for both releases, each tag's manifest (fetched by tag, no HEAD first) and config
    assert cold == Counter({"tags": 1, "manifest": TAGS, "blob": TAGS})
    second, warm = await sidecar.cycle()
    assert second.moves == ()
    assert warm["tags"] == 1
    assert 1 <= warm["manifest"] <= warm_budget(2)
    assert warm["blob"] == 0


async def test_a_restart_with_the_state_dir_costs_what_a_second_cycle_costs(
    sidecars: Any, releases: Releases, pusher: ImagePusher, registry: Registry
) -> None:
    image = f"{registry.host}/{push_repository(pusher)}"
    releases.create("glob", {"image": f"{image}:{tag(0)}"}, GLOB)
    first = sidecars()
    await first.cycle()
    await first.close()
    assert (first.state_dir / FILE_NAME).is_file()
    restarted = sidecars()
    report, warm = await restarted.cycle()
    assert report.moves == ()
    assert warm["tags"] == 1
    assert 1 <= warm["manifest"] <= warm_budget(1)
    assert warm["blob"] == 0
    await restarted.close()
    # safe to delete: the next start is simply cold again
    (first.state_dir / FILE_NAME).unlink()
    (first.state_dir / FILE_NAME).with_name("unrelated").write_text("")
    _, cold = await sidecars().cycle()
    assert cold["blob"] == TAGS


async def test_a_garbled_state_file_means_a_cold_start_not_a_crash(
    sidecars: Any, releases: Releases, pusher: ImagePusher, registry: Registry, tmp_path: Path
) -> None:
    image = f"{registry.host}/{push_repository(pusher)}"
    releases.create("glob", {"image": f"{image}:{tag(0)}"}, GLOB)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / FILE_NAME).write_bytes(b'{"format": "helmrelease-tag-cache", "version": 1, "repos')
    report, cold = await sidecars().cycle()
    assert len(report.moves) == 1
    assert cold["blob"] == TAGS


async def test_a_repushed_current_tag_is_noticed(
    sidecars: Any, releases: Releases, pusher: ImagePusher, registry: Registry
) -> None:
    repository = push_repository(pusher)
    image = f"{registry.host}/{repository}"
    releases.create("glob", {"image": f"{image}:{tag(0)}"}, GLOB)
    sidecar = sidecars()
    await sidecar.cycle()
    assert image_tag(releases, "glob") == tag(TAGS - 1)
    # the running tag is rebuilt from an older base: the one before it is now the newest build
    pusher.push(repository, tag(TAGS - 1), created=utc(5000))
    report, costs = await sidecar.cycle()
    assert [move.new_tag for move in report.moves] == [tag(TAGS - 2)]
    assert costs["blob"] == 1  # only the re-pushed manifest's config is read
    assert costs["manifest"] <= warm_budget(1) + 2  # + its GET, + confirming the new best


async def test_a_new_tag_costs_its_own_lookups_once(
    sidecars: Any, releases: Releases, pusher: ImagePusher, registry: Registry
) -> None:
    repository = push_repository(pusher)
    image = f"{registry.host}/{repository}"
    releases.create("glob", {"image": f"{image}:{tag(0)}"}, GLOB)
    releases.create("star", {"image": f"{image}:{tag(0)}"}, STAR)
    sidecar = sidecars()
    await sidecar.cycle()
    pusher.push(repository, tag(TAGS), created=utc(1))
    report, costs = await sidecar.cycle()
    assert sorted(move.new_tag for move in report.moves) == [tag(TAGS), tag(TAGS)]
    assert costs["blob"] == 1
    assert costs["manifest"] <= warm_budget(2) + 1
    _, after = await sidecar.cycle()
    assert after["blob"] == 0


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host).start()
    yield proxy
    proxy.stop()


async def test_a_stalled_registry_does_not_hold_back_another_registrys_decision(
    sidecars: Any, releases: Releases, pusher: ImagePusher, registry: Registry, proxy: FaultProxy
) -> None:
    fast = f"{registry.host}/{push_repository(pusher)}"
    slow = f"{proxy.host}/{push_repository(pusher)}"  # the same registry, reached as another host
    releases.create("fast", {"image": f"{fast}:{tag(0)}"}, GLOB)
    releases.create("slow", {"image": f"{slow}:{tag(0)}"}, GLOB)
    proxy.hold()
    cycle = asyncio.create_task(sidecars(proxy.host).cycle())
    try:
        await asyncio.to_thread(
            eventually, lambda: image_tag(releases, "fast") == tag(TAGS - 1), 30, "the fast release moved"
        )
        assert not cycle.done()
        assert image_tag(releases, "slow") == tag(0)
    finally:
        proxy.release()
    report, _ = await cycle
    assert len(report.moves) == 2
    assert image_tag(releases, "slow") == tag(TAGS - 1)


@pytest.fixture
def budget_proxy(registry: Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host, budget=PullBudget(limit=4, window=2.0)).start()
    yield proxy
    proxy.stop()


async def test_an_announced_pull_budget_slows_the_client_before_a_429(
    sidecars: Any, releases: Releases, pusher: ImagePusher, budget_proxy: FaultProxy
) -> None:
    image = f"{budget_proxy.host}/{push_repository(pusher, tags=12)}"
    releases.create("glob", {"image": f"{image}:{tag(0)}"}, GLOB)
    report, costs = await sidecars(budget_proxy.host).cycle()
    assert [move.new_tag for move in report.moves] == [tag(11)]
    gets = budget_proxy.manifest_gets()
    assert len(gets) == costs["manifest"] == 12
    assert budget_proxy.refused() == []  # never told "too many requests"
    assert gets[-1] - gets[0] >= 2 * 2.0 * 0.9  # 12 GETs at 4 per 2s window span at least two windows
