"""The loop's newer features with the cluster and registries in memory: pinned digests, soak time and
pauses after someone set an image back."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from tests.unit.automation.fakes import T0, FakeKube, FakeRegistry, at, release

from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.service import ImagePolicyService, ImagePolicySettings
from helmrelease.automation.soak import FirstSeen, load_first_seen, save_first_seen
from helmrelease.images.reference import CanonicalName

APP = "reg.example.com/team/app"
SEMVER = {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:~1.0"}
PIN = {**SEMVER, "image.helm.fluxcd.io/pin-digest.chart-image": "true"}
WRITTEN = "image.helm.fluxcd.io/written.chart-image"
PAUSED = "image.helm.fluxcd.io/paused.chart-image"


def digest(char: str) -> str:
    return "sha256:" + char * 64


class Clock:
    """Wall-clock time the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def harness(
    registry: FakeRegistry, *objects: dict[str, Any], clock: Clock | None = None, **settings: Any
) -> tuple[FakeKube, ImagePolicyService]:
    kube = FakeKube().add(*objects)
    service = ImagePolicyService(
        kube,
        registry,
        settings=ImagePolicySettings(**settings),
        metrics=AutomationMetrics.create(CollectorRegistry()),
        wall_clock=clock or Clock(at(60 * 24)),
    )
    return kube, service


def annotations(kube: FakeKube, name: str = "web") -> dict[str, str]:
    found: dict[str, str] = kube.objects["apps", name]["metadata"]["annotations"]
    return found


# --- pinned digests --------------------------------------------------------------------------------


async def test_a_pinned_image_gets_the_chosen_tag_and_its_digest_in_the_sibling_value() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(3)}}, digests={APP: {"1.0.5": digest("b")}})
    values = {"image": {"repository": APP, "tag": "1.0.0", "digest": ""}}
    kube, service = harness(registry, release("web", values, PIN))
    report = await service.run_cycle()
    assert kube.values("web")["image"] == {"repository": APP, "tag": "1.0.5", "digest": digest("b")}
    assert annotations(kube)[WRITTEN] == f"1.0.5@{digest('b')}"
    assert kube.events == [
        ("web", "Normal", "ImageUpdated", f"{APP} 1.0.0 → 1.0.5 digest (none) → {digest('b')} (semver:~1.0)")
    ]
    assert not report.failed


async def test_a_tag_pushed_again_with_new_content_is_a_digest_update() -> None:
    registry = FakeRegistry({APP: {"1.0.5": at(3)}}, digests={APP: {"1.0.5": digest("b")}})
    values = {"image": f"{APP}:1.0.5@{digest('a')}"}
    kube, service = harness(registry, release("web", values, PIN))
    await service.run_cycle()
    assert kube.values("web")["image"] == f"{APP}:1.0.5@{digest('b')}"
    assert kube.events == [
        ("web", "Normal", "ImageUpdated", f"{APP} 1.0.5 digest {digest('a')} → {digest('b')} (semver:~1.0)")
    ]
    await service.run_cycle()
    assert kube.calls["patch"] == 1  # the same digest again is no update


async def test_a_digest_pin_without_the_annotation_is_still_left_alone() -> None:
    registry = FakeRegistry({APP: {"1.0.5": at(3), "1.0.6": at(4)}})
    values = {"image": f"{APP}:1.0.5@{digest('a')}"}
    kube, service = harness(registry, release("web", values, SEMVER))
    await service.run_cycle()
    assert kube.patches == []
    assert registry.requests == {}
    assert [reason for _, _, reason, _ in kube.events] == ["ImageAutomationWarning"]


# --- soak time -------------------------------------------------------------------------------------


async def test_a_new_tag_waits_for_min_age_then_moves_without_a_push() -> None:
    clock = Clock(at(10))
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(9)}})
    soak = {**SEMVER, "image.helm.fluxcd.io/min-age.chart-image": "5m"}
    values = {"image": {"repository": APP, "tag": "1.0.0"}}
    kube, service = harness(registry, release("web", values, soak), clock=clock)
    await service.run_cycle()  # built 1 minute ago, first seen now
    clock.now = at(14)
    await service.run_cycle()
    assert kube.patches == []
    clock.now = at(15)
    await service.run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.5"


async def test_soak_counts_from_first_sight_when_that_is_later_than_the_build() -> None:
    clock = Clock(at(100))
    registry = FakeRegistry({APP: {"1.0.0": at(1)}})
    soak = {**SEMVER, "image.helm.fluxcd.io/min-age.chart-image": "1h"}
    kube, service = harness(
        registry, release("web", {"image": {"repository": APP, "tag": "1.0.0"}}, soak), clock=clock
    )
    await service.run_cycle()
    registry.repositories[APP]["1.0.5"] = at(2)  # built long ago, pushed (seen) only now
    clock.now = at(101)
    await service.run_cycle()
    clock.now = at(160)
    await service.run_cycle()
    assert kube.patches == []
    clock.now = at(161)
    await service.run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.5"


async def test_an_unreadable_min_age_is_a_warning_and_holds_the_image() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(3)}})
    soak = {**SEMVER, "image.helm.fluxcd.io/min-age.chart-image": "an hour"}
    kube, service = harness(registry, release("web", {"image": {"repository": APP, "tag": "1.0.0"}}, soak))
    for _ in range(2):
        report = await service.run_cycle()
    assert kube.patches == []
    [(_, kind, reason, message)] = kube.events
    assert (kind, reason) == ("Warning", "ImageAutomationWarning")
    assert message.startswith("image.helm.fluxcd.io/min-age.chart-image: 'an hour' is not a duration")
    assert not report.failed


def test_first_sight_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    name = CanonicalName("reg.example.com", "team/app")
    record = FirstSeen(lambda: T0)
    record.observe(name, ["1.0.0", "1.0.5"])
    path = tmp_path / "state" / "first-seen.json"
    save_first_seen(path, record)
    later = FirstSeen(lambda: T0 + timedelta(days=1))
    load_first_seen(path, later)
    assert later.observe(name, ["1.0.5", "1.1.0"]) == {"1.0.5": T0, "1.1.0": T0 + timedelta(days=1)}
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_broken_first_sight_file_is_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "first-seen.json"
    path.write_text('{"reg.example.com/team/app": {"1.0.0": "yesterday"}, "nohost": {}}')
    record = FirstSeen(lambda: T0)
    load_first_seen(path, record)
    assert record.observe(CanonicalName("reg.example.com", "team/app"), ["1.0.0"]) == {"1.0.0": T0}
    path.write_text("{not json")
    load_first_seen(path, FirstSeen(lambda: T0))  # logged, not raised


# --- set back by someone else ----------------------------------------------------------------------


MANAGED = [
    {
        "manager": "helmrelease-image-policy",
        "operation": "Update",
        "time": "2024-01-01T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{WRITTEN}": {}}}},
    },
    {
        "manager": "kubectl-edit",
        "operation": "Update",
        "time": "2024-01-01T11:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:values": {"f:image": {"f:tag": {}}}}},
    },
]


def set_back(tag: str, written: str, **extra: str) -> dict[str, Any]:
    obj = release("web", {"image": {"repository": APP, "tag": tag}}, {**SEMVER, WRITTEN: written, **extra})
    obj["metadata"]["managedFields"] = MANAGED
    return obj


async def test_an_image_set_back_by_someone_is_paused_not_undone() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(3)}})
    kube, service = harness(registry, set_back("1.0.0", "1.0.5"))
    report = await service.run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.0"
    assert annotations(kube)[PAUSED] == "1.0.0 set by kubectl-edit at 2024-01-01T11:00:00Z"
    assert annotations(kube)[WRITTEN] == "1.0.0"
    assert kube.events == [
        (
            "web",
            "Normal",
            "ImagePaused",
            "chart-image: 1.0.0 set by kubectl-edit at 2024-01-01T11:00:00Z, behind 1.0.5 that image "
            "automation wrote; automation of chart-image is paused so that choice stands. To resume, remove "
            f"the annotation: kubectl annotate helmrelease web {PAUSED}-",
        )
    ]
    assert report.releases[0].paused == ("chart-image",)
    for _ in range(2):
        await service.run_cycle()
    assert (kube.calls["patch"], len(kube.events)) == (1, 1)
    del annotations(kube)[PAUSED]  # the person resumes
    await service.run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.5"


async def test_a_newer_tag_set_by_hand_is_not_a_step_back() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(3), "1.0.7": at(4)}})
    kube, service = harness(registry, set_back("1.0.5", "1.0.0"))
    await service.run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.7"
    assert PAUSED not in annotations(kube)


async def test_a_step_back_under_build_time_order_is_judged_by_build_times() -> None:
    registry = FakeRegistry({APP: {"b": at(1), "a": at(3)}})
    obj = set_back("b", "a", **{"fluxcd.io/tag.chart-image": "glob:*"})
    kube, service = harness(registry, obj)
    await service.run_cycle()
    assert annotations(kube)[PAUSED].startswith("b set by kubectl-edit")
    assert kube.values("web")["image"]["tag"] == "b"


async def test_without_managed_fields_the_pause_says_someone_else() -> None:
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(3)}})
    obj = set_back("1.0.0", "1.0.5")
    del obj["metadata"]["managedFields"]
    kube, service = harness(registry, obj, clock=Clock(datetime.fromisoformat("2026-12-02T07:00:00+00:00")))
    await service.run_cycle()
    assert annotations(kube)[PAUSED] == "1.0.0 set by someone else at 2026-12-02T07:00:00Z"


async def test_a_pinned_digest_changed_by_someone_is_a_step_back_too() -> None:
    registry = FakeRegistry({APP: {"1.0.5": at(3)}}, digests={APP: {"1.0.5": digest("b")}})
    values = {"image": f"{APP}:1.0.5@{digest('a')}"}
    kube, service = harness(registry, release("web", values, {**PIN, WRITTEN: f"1.0.5@{digest('b')}"}))
    await service.run_cycle()
    assert kube.values("web")["image"] == f"{APP}:1.0.5@{digest('a')}"
    assert annotations(kube)[PAUSED].startswith(f"1.0.5@{digest('a')} set by someone else at ")
