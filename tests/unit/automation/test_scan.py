"""ImageScanner: which registry calls each policy costs, what it decides, and how failures come back."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.automation.fakes import FakeRegistry, at, release

from helmrelease.adapters.registry import (
    BasicCredentials,
    CredentialStore,
    RegistryConfig,
    RegistryMetrics,
    RegistryUnavailable,
)
from helmrelease.adapters.registry.tagcache import TagRecord
from helmrelease.automation.lookups import RecheckBudget
from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.scan import (
    ImageScan,
    ImageScanner,
    RegistryPool,
    ScanProgress,
    needs_build_times,
)
from helmrelease.automation.watched import ImageTarget, read_release
from helmrelease.images.policy import TagOrder
from helmrelease.images.reference import CanonicalName
from helmrelease.images.select import NoChangeReason, TagCandidate

REPO = "reg.example.com/team/app"
TAGS: dict[str, datetime | None] = {
    "1.0.0": at(10),
    "1.0.5": at(20),
    "1.1.0": at(30),
    "1.0.2": at(40),
    "2.0.0-rc.1": at(50),
    "latest": at(60),
    "nightly": None,
}


def target(tag: str = "1.0.0", policy: str | None = None, order: str | None = None) -> ImageTarget:
    annotations = {}
    if policy is not None:
        annotations["fluxcd.io/tag.chart-image"] = policy
    if order is not None:
        annotations["fluxcd.io/tag-order.chart-image"] = order
    return read_release(release("hr", {"image": f"{REPO}:{tag}"}, annotations)).targets[0]


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry({REPO: dict(TAGS)})


async def scan(
    registry: FakeRegistry, image: ImageTarget, credentials: CredentialStore | None = None
) -> ImageScan:
    return await ImageScanner(registry).scan(image, credentials or CredentialStore())


@pytest.mark.parametrize(
    ("policy", "order", "new_tag", "build_time_lookups"),
    [
        pytest.param("semver:~1.0", None, "1.0.5", 0, id="semver-lists-tags-only"),
        pytest.param("semver:*", None, "1.1.0", 0, id="semver-no-prerelease"),
        pytest.param("glob:1.0.*", None, "1.0.2", 3, id="glob-by-build-time"),
        pytest.param("glob:1.1.*", None, "1.1.0", 2, id="glob-current-looked-up-too"),
        pytest.param(None, None, "2.0.0-rc.1", 6, id="default-glob-star"),
        pytest.param("glob:1.0.*", "alphabetical", "1.0.5", 0, id="alphabetical-lists-only"),
    ],
)
async def test_policies_and_their_costs(
    registry: FakeRegistry, policy: str | None, order: str | None, new_tag: str, build_time_lookups: int
) -> None:
    result = await scan(registry, target(policy=policy, order=order))
    assert result.error is None
    assert result.move is not None
    assert result.move.new_tag == new_tag
    assert result.newest is not None
    assert result.newest.tag == new_tag
    assert registry.requests["tags", REPO] == 1
    assert sum(n for (kind, _), n in registry.requests.items() if kind == "created") == build_time_lookups


async def test_a_tag_deleted_since_the_listing_has_no_build_time(registry: FakeRegistry) -> None:
    class Vanishing(FakeRegistry):
        async def image_created(
            self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
        ) -> datetime | None:
            if tag == "1.0.2":
                del self.repositories[REPO]["1.0.2"]
            return await super().image_created(name, tag, credentials)

    vanishing = Vanishing({REPO: dict(TAGS)})
    result = await scan(vanishing, target(policy="glob:1.0.*"))
    assert result.error is None
    assert result.move is not None
    assert result.move.new_tag == "1.0.5"


async def test_a_registry_failure_is_the_scans_error(registry: FakeRegistry) -> None:
    registry.failures[REPO] = RegistryUnavailable("reg.example.com", "team/app", "tag list: timed out")
    result = await scan(registry, target(policy="semver:~1.0"))
    assert result.decision is None
    assert result.move is None
    assert result.error is not None
    assert "reg.example.com" in result.error
    assert "timed out" in result.error


async def test_a_policy_that_does_not_parse_asks_no_registry(registry: FakeRegistry) -> None:
    result = await scan(registry, target(policy="semver:>>1"))
    assert result.error is not None
    assert "does not parse" in result.error
    assert registry.requests == {}


async def test_an_image_we_cannot_edit_still_shows_the_newest_tag(registry: FakeRegistry) -> None:
    pinned = read_release(release("hr", {"image": f"{REPO}@sha256:{'a' * 64}"})).targets[0]
    result = await scan(registry, pinned)
    assert result.decision is None
    assert result.newest == TagCandidate("2.0.0-rc.1", at(50))


@pytest.mark.parametrize(
    ("current", "reason"),
    [
        pytest.param("1.0.5", NoChangeReason.ALREADY_NEWEST, id="newest"),
        pytest.param("1.0.9", NoChangeReason.WOULD_DOWNGRADE, id="ahead-of-registry"),
    ],
)
async def test_no_move(registry: FakeRegistry, current: str, reason: NoChangeReason) -> None:
    result = await scan(registry, target(current, policy="semver:~1.0"))
    assert result.move is None
    assert result.decision is not None
    assert result.decision.reason is reason


async def test_credentials_are_chosen_per_image(registry: FakeRegistry) -> None:
    robot = BasicCredentials("robot", "secret")
    registry.protected[REPO] = robot
    config = {"auths": {"reg.example.com": {"username": "robot", "password": "secret"}}}
    result = await scan(registry, target(policy="semver:~1.0"), CredentialStore.from_docker_configs(config))
    assert result.move is not None
    denied = await scan(registry, target(policy="semver:~1.0"))
    assert denied.error is not None
    assert "HTTP 401" in denied.error


@pytest.mark.parametrize(
    ("order", "needed"),
    [
        (TagOrder.CREATED, True),
        (TagOrder.SEMVER, False),
        (TagOrder.ALPHABETICAL, False),
        (TagOrder.NUMERICAL, False),
    ],
    ids=str,
)
def test_only_created_order_needs_build_times(order: TagOrder, needed: bool) -> None:
    assert needs_build_times(order) is needed


async def test_pool_keeps_one_client_per_credentials_across_cycles() -> None:
    pool = RegistryPool(RegistryConfig(), RegistryMetrics.create(CollectorRegistry()))
    robot = BasicCredentials("robot", "secret")
    try:
        assert pool.client_for(None) is pool.client_for(None)
        assert pool.client_for(robot) is pool.client_for(BasicCredentials("robot", "secret"))
        assert pool.client_for(robot) is not pool.client_for(None)
        assert pool.cycle() is not pool.cycle()
    finally:
        await pool.close()


class Counting(FakeRegistry):
    """Records the most build-time lookups in flight at once."""

    in_flight: int = 0
    most: int = 0

    async def image_created(
        self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
    ) -> datetime | None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0)
            return await super().image_created(name, tag, credentials)
        finally:
            self.in_flight -= 1


async def test_build_time_lookups_are_bounded_per_image() -> None:
    many = {f"1.0.{patch}": at(patch) for patch in range(100)}
    registry = Counting({REPO: many})
    result = await ImageScanner(registry, lookup_width=4).scan(target(policy="glob:1.0.*"), CredentialStore())
    assert result.move is not None
    assert result.move.new_tag == "1.0.99"
    assert registry.most == 4


async def test_the_first_lookup_failure_stops_the_others() -> None:
    class FailsOnce(Counting):
        async def image_created(
            self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
        ) -> datetime | None:
            if tag == "1.0.3":
                raise RegistryUnavailable("reg.example.com", "team/app", "manifest 1.0.3: HTTP 503")
            return await super().image_created(name, tag, credentials)

    registry = FailsOnce({REPO: {f"1.0.{patch}": at(patch) for patch in range(100)}})
    result = await ImageScanner(registry, lookup_width=2).scan(target(policy="glob:1.0.*"), CredentialStore())
    assert result.error is not None
    assert "manifest 1.0.3: HTTP 503" in result.error
    assert sum(n for (kind, _), n in registry.requests.items() if kind == "created") < 10


def test_lookup_width_must_be_positive(registry: FakeRegistry) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ImageScanner(registry, lookup_width=0)


# --- with a tag cache: what a warm cycle looks up ------------------------------------------------------

MANY = {f"1.0.{patch}": at(patch) for patch in range(100)}
DAILY = RecheckBudget(interval=300, period=86400)


def cached(tags: dict[str, datetime | None], checked: float = 0.0) -> dict[str, TagRecord]:
    return {
        tag: TagRecord(f"sha256:{n:064x}", created, checked) for n, (tag, created) in enumerate(tags.items())
    }


def lookups(registry: FakeRegistry) -> set[str]:
    return {key.rpartition(":")[2] for (kind, key), n in registry.requests.items() if kind == "created"}


async def test_a_warm_scan_looks_up_the_current_tag_the_best_and_a_rolling_slice() -> None:
    registry = FakeRegistry({REPO: dict(MANY)}, known={REPO: cached(MANY)})
    result = await ImageScanner(registry, recheck=DAILY).scan(
        target("1.0.0", "glob:1.0.*"), CredentialStore()
    )
    assert result.move is not None
    assert result.move.new_tag == "1.0.99"
    assert DAILY.rolling(100) == 1
    assert lookups(registry) == {"1.0.0", "1.0.99", "1.0.1"}  # current, best, least recently checked


async def test_a_new_tag_is_looked_up_and_wins() -> None:
    tags = {**MANY, "1.0.100": at(500)}
    registry = FakeRegistry({REPO: tags}, known={REPO: cached(MANY)})
    result = await ImageScanner(registry, recheck=DAILY).scan(
        target("1.0.0", "glob:1.0.*"), CredentialStore()
    )
    assert result.move is not None
    assert result.move.new_tag == "1.0.100"
    assert "1.0.100" in lookups(registry)
    assert len(lookups(registry)) <= 4


async def test_a_best_candidate_repushed_with_an_older_build_gives_way_to_the_next_confirmed_one() -> None:
    now = {**MANY, "1.0.99": at(-5)}  # re-pushed: the cache still says at(99)
    registry = FakeRegistry({REPO: now}, known={REPO: cached(MANY)})
    result = await ImageScanner(registry, recheck=DAILY).scan(
        target("1.0.0", "glob:1.0.*"), CredentialStore()
    )
    assert result.move is not None
    assert result.move.new_tag == "1.0.98"
    assert {"1.0.99", "1.0.98"} <= lookups(registry)


async def test_a_repushed_current_tag_is_noticed() -> None:
    now = {**MANY, "1.0.50": at(1000)}  # the running tag was rebuilt: nothing is newer now
    registry = FakeRegistry({REPO: now}, known={REPO: cached(MANY)})
    result = await ImageScanner(registry, recheck=DAILY).scan(
        target("1.0.50", "glob:1.0.*"), CredentialStore()
    )
    assert result.move is None
    assert result.decision is not None
    assert result.decision.reason is NoChangeReason.ALREADY_NEWEST


async def test_without_a_budget_every_eligible_tag_is_looked_up() -> None:
    registry = FakeRegistry({REPO: dict(MANY)}, known={REPO: cached(MANY)})
    await ImageScanner(registry).scan(target("1.0.0", "glob:1.0.*"), CredentialStore())
    assert len(lookups(registry)) == 100


async def test_a_warm_image_is_not_held_back_by_a_cold_one_on_the_same_registry() -> None:
    """The cold image waits for its registry forever; the warm one still decides."""
    cold_repo = "reg.example.com/team/cold"
    release_cold = asyncio.Event()

    class Stalling(FakeRegistry):
        async def image_created(
            self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
        ) -> datetime | None:
            if str(name) == cold_repo:
                await release_cold.wait()
            return await super().image_created(name, tag, credentials)

    registry = Stalling({REPO: dict(MANY), cold_repo: dict(MANY)}, known={REPO: cached(MANY)})
    scanner = ImageScanner(registry, recheck=DAILY, lookup_width=4)
    cold_target = read_release(release("cold", {"image": f"{cold_repo}:1.0.0"})).targets[0]
    cold = [asyncio.create_task(scanner.scan(cold_target, CredentialStore())) for _ in range(3)]
    await asyncio.sleep(0)
    warm = await asyncio.wait_for(scanner.scan(target("1.0.0", "glob:1.0.*"), CredentialStore()), 5)
    assert warm.move is not None
    assert not any(task.done() for task in cold)
    release_cold.set()
    assert all(result.move is not None for result in await asyncio.gather(*cold))


async def test_progress_counts_every_image_as_it_is_decided(caplog: pytest.LogCaptureFixture) -> None:
    metrics = AutomationMetrics.create(CollectorRegistry())
    progress = ScanProgress(metrics, every=2)
    registry = FakeRegistry({REPO: dict(TAGS)})
    registry.failures["reg.example.com/team/broken"] = RegistryUnavailable(
        "reg.example.com", "team/broken", "down"
    )
    scanner = ImageScanner(registry, observe=progress)
    broken = read_release(release("b", {"image": "reg.example.com/team/broken:1.0.0"})).targets[0]
    with caplog.at_level(logging.INFO, logger="helmrelease.automation.scan"):
        for image in (target(policy="semver:~1.0"), broken, target(policy="glob:1.0.*"), target()):
            await scanner.scan(image, CredentialStore())
    assert (progress.decided, progress.failed) == (3, 1)
    assert metrics.cycle_images._value.get() == 4
    assert metrics.images_scanned.labels("failed")._value.get() == 1
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "scan progress: 2 images scanned (1 failed)",
        "scan progress: 4 images scanned (1 failed)",
    ]


async def test_cold_repositories_are_read_two_at_a_time_per_host_and_share_their_place() -> None:
    """Three cold repositories on one host: two are read, the third waits its turn, and a second image of a
    repository being read does not take a place of its own."""
    names = [f"reg.example.com/team/cold-{n}" for n in range(3)]
    go = asyncio.Event()
    asked: set[str] = set()

    class Stalling(FakeRegistry):
        async def image_created(
            self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
        ) -> datetime | None:
            asked.add(str(name))
            await go.wait()
            return await super().image_created(name, tag, credentials)

    registry = Stalling({name: dict(MANY) for name in names})
    scanner = ImageScanner(registry, recheck=DAILY, lookup_width=4)

    def image(name: str) -> ImageTarget:
        return read_release(release("r", {"image": f"{name}:1.0.0"})).targets[0]

    order = [names[0], names[0], names[1], names[2]]
    tasks = [asyncio.create_task(scanner.scan(image(name), CredentialStore())) for name in order]
    for _ in range(5):
        await asyncio.sleep(0)
    assert asked == {names[0], names[1]}
    go.set()
    results = await asyncio.gather(*tasks)
    assert all(result.move is not None for result in results)
    assert asked == set(names)
