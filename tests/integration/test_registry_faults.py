"""The image-policy loop against a registry that fails in every way a registry or the proxy before it can.

A fault proxy sits in front of the real registry and breaks what a wrong decision would need: the tag-list
page holding the newest tag (the earlier pages answer, so a partial list would pick ``1.0.1``), or the
manifest of ``1.0.1`` (served with the body of a ``trap`` image built in the future, under 1.0.1's digest:
believed, it would make 1.0.1 the newest). For each fault the loop, as the sidecar wires it, runs several
cycles: no tag but the running one is ever written, each cycle counts the failure in the metrics, the
release gets one Warning Event however many cycles see it, a ``Retry-After`` holds every request back for
as long as it says, and once the proxy heals the next cycle moves the release by itself.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry
from tests.integration.test_image_policy import Releases
from tests.support.fault_proxy import (
    HUGE_TAGS,
    RETRY_AFTER,
    Fault,
    FaultProxy,
    Kind,
    any_tag_page,
    manifest_of,
    tag_page_after,
)
from tests.support.registry import ImagePusher, Registry, metric_samples, utc

from helmrelease.adapters.kube import KubeClient
from helmrelease.adapters.registry import RegistryConfig, RegistryMetrics, RetryPolicy, Timeouts
from helmrelease.adapters.registry.tagcache import FILE_NAME, TagCacheFile
from helmrelease.automation import AutomationMetrics, ImagePolicyService, ImagePolicySettings, RegistryPool
from helmrelease.automation.service import CycleReport

pytestmark = pytest.mark.usefixtures("crd_installed")

GLOB = {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "glob:1.0.*"}
FAULTY_CYCLES = 3
# Short limits so a hung registry costs seconds, not minutes; the drip's bytes come faster than ``read``.
TIMEOUTS = Timeouts(connect=2.0, read=1.0, total=3.0)
RETRY = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.2, max_retry_after=10.0)


@dataclass(frozen=True)
class Case:
    fault: Kind
    on: str  # "page": the tag page after 1.0.1; "pages": every tag page; "manifest": 1.0.1's manifest
    error: str  # in the Warning's message
    code: str  # the request metric's code label the faulted requests are counted under


CASES = [
    Case(Kind.TOO_MANY, "page", "HTTP 429 (TOOMANYREQUESTS: slow down) (after 2 attempts)", "429"),
    Case(Kind.TOO_MANY_RETRY_AFTER, "page", "HTTP 429 (TOOMANYREQUESTS: slow down)", "429"),
    Case(Kind.INTERNAL, "page", "HTTP 500 (UNAVAILABLE: injected fault) (after 2 attempts)", "500"),
    Case(Kind.BAD_GATEWAY, "page", "HTTP 502 (after 2 attempts)", "502"),
    Case(Kind.UNAVAILABLE, "page", "HTTP 503 (UNAVAILABLE: injected fault) (after 2 attempts)", "503"),
    Case(Kind.RESET, "page", "(after 2 attempts)", "error"),
    Case(Kind.TIMEOUT, "page", "timed out (connect 2s, read 1s, total 3s) (after 2 attempts)", "timeout"),
    Case(Kind.DRIP, "page", "timed out (connect 2s, read 1s, total 3s) (after 2 attempts)", "timeout"),
    Case(Kind.TRUNCATED, "page", "tag list is not JSON", "200"),
    Case(Kind.MALFORMED, "page", "tag list is not JSON", "200"),
    Case(Kind.CONTENT_TYPE, "page", "served as 'text/html; charset=utf-8', not JSON", "200"),
    Case(Kind.DIGEST, "manifest", "hashes to", "200"),
    Case(
        Kind.REDIRECT_LOOP,
        "page",
        "tag list: redirected 10 times without an answer: a redirect loop",
        "error",
    ),
    Case(Kind.LINK_LOOP, "page", "next page link repeats an earlier page", "200"),
]


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host, page_size=1).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def repository(pusher: ImagePusher) -> str:
    """1.0.0, 1.0.1, 1.0.2 built in that order, and ``trap``, built in the future, that no policy matches."""
    repository = f"faults/app-{uuid.uuid4().hex[:8]}"
    for tag, minutes in (("1.0.0", 30), ("1.0.1", 20), ("1.0.2", 10), ("trap", -600)):
        pusher.push(repository, tag, created=utc(minutes))
    return repository


@pytest.fixture
def releases(custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api, namespace: str) -> Releases:
    return Releases(custom, core, namespace)


class Loop:
    """The image-policy loop as ``helmrelease image-policy`` wires it (state directory included), scoped to
    the test's namespace; its metrics are what the sidecar's /metrics serves."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str, state_dir: Path, *hosts: str) -> None:
        self.metrics = CollectorRegistry()
        self.pool = RegistryPool(
            RegistryConfig(insecure_hosts=frozenset(hosts), retry=RETRY, timeouts=TIMEOUTS),
            RegistryMetrics.create(self.metrics),
            state=TagCacheFile(state_dir / FILE_NAME),
        )
        self.service = ImagePolicyService(
            KubeClient(api_client),
            self.pool,
            settings=ImagePolicySettings(interval=300.0, namespaces=(namespace,)),
            metrics=AutomationMetrics.create(self.metrics),
        )

    async def cycle(self) -> CycleReport:
        return await self.service.run_cycle()

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.get_sample_value(name, labels) or 0.0

    def requests(self, host: str) -> Counter[tuple[str, str]]:
        """Registry requests by (kind, code)."""
        counts: Counter[tuple[str, str]] = Counter()
        samples = metric_samples(
            self.metrics, "helmrelease_registry_requests_total", ("registry", "kind", "code")
        )
        for (registry, kind, code), value in samples.items():
            if registry == host:
                counts[kind, code] += int(value)
        return counts


@pytest.fixture
async def loop(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path, proxy: FaultProxy
) -> AsyncIterator[Loop]:
    loop = Loop(api_client, namespace, tmp_path / "state", proxy.host)
    yield loop
    await loop.pool.close()


def running_tag(releases: Releases) -> str:
    image: str = releases.values("hr")["image"]
    return image.rpartition(":")[2]


def where(case: Case) -> Fault:
    hits = {"page": tag_page_after("1.0.1"), "pages": any_tag_page, "manifest": manifest_of("1.0.1")}[case.on]
    return Fault(case.fault, hits, swap="trap" if case.fault is Kind.DIGEST else None)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.fault.value) for case in CASES])
async def test_a_registry_fault_writes_no_wrong_tag_warns_once_and_heals(
    case: Case, proxy: FaultProxy, loop: Loop, repository: str, releases: Releases
) -> None:
    image = f"{proxy.host}/{repository}"
    releases.create("hr", {"image": f"{image}:1.0.0"}, GLOB)
    proxy.inject(where(case))

    for cycle in range(1, FAULTY_CYCLES + 1):
        report = await loop.cycle()
        assert report.moves == ()
        assert report.failed
        assert running_tag(releases) == "1.0.0"  # never 1.0.1 (a partial view), never trap
        assert loop.value("helmrelease_image_update_failures_total", cause="registry") == cycle
    faulted = proxy.faulted()
    assert len(faulted) >= FAULTY_CYCLES  # every cycle met the fault
    requests = loop.requests(proxy.host)
    fault_kind = "manifest" if case.on == "manifest" else "tags"
    assert requests[fault_kind, case.code] >= FAULTY_CYCLES, requests

    [(kind, reason, message)] = releases.events("hr")
    assert (kind, reason) == ("Warning", "ImageScanFailed")
    assert message.startswith(f"chart-image: registry {proxy.host}, repository {repository}: ")
    assert case.error in message, message

    if case.fault is Kind.TOO_MANY_RETRY_AFTER:
        # Nothing reached the registry while a Retry-After it sent was running.
        for refused in faulted:
            after = [entry for entry in proxy.log if entry.arrived > refused.answered]
            if after:
                assert min(entry.arrived for entry in after) - refused.answered >= RETRY_AFTER - 0.05

    proxy.heal()
    report = await loop.cycle()
    assert [move.new_tag for move in report.moves] == ["1.0.2"]
    assert not report.failed
    assert running_tag(releases) == "1.0.2"
    # Events are listed by second-resolution timestamps: the two may share one, so compare as a set
    assert sorted(reason for _, reason, _ in releases.events("hr")) == ["ImageScanFailed", "ImageUpdated"]


async def test_a_hundred_thousand_tags_over_a_hundred_pages_are_all_read(
    proxy: FaultProxy, loop: Loop, repository: str, releases: Releases
) -> None:
    """The real tags sort after 100 000 others, on the last page: only a complete listing finds 1.0.2."""
    releases.create("hr", {"image": f"{proxy.host}/{repository}:1.0.0"}, GLOB)
    proxy.inject(Fault(Kind.HUGE, any_tag_page))
    report = await loop.cycle()
    assert [move.new_tag for move in report.moves] == ["1.0.2"]
    assert not report.failed
    assert running_tag(releases) == "1.0.2"
    pages = -(-(HUGE_TAGS + 4) // 1000)
    assert loop.requests(proxy.host)["tags", "200"] == pages
    assert len(proxy.faulted()) == pages
    assert [reason for _, reason, _ in releases.events("hr")] == ["ImageUpdated"]
