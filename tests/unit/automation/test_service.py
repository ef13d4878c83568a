"""The loop's decisions and reactions, with the cluster and the registries in memory."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.automation.fakes import FakeKube, FakeRegistry, FakeRepository, at, release

from helmrelease.adapters.git import RemoteUnreachable
from helmrelease.adapters.kube import Conflict, Forbidden, KubeError
from helmrelease.adapters.registry import RegistryUnauthorized, RegistryUnavailable
from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.service import (
    CycleReport,
    ImagePolicyService,
    ImagePolicySettings,
    ObjectKey,
    RepeatFilter,
)
from helmrelease.automation.watched import Hold
from helmrelease.automation.writeback import GitWriteback
from helmrelease.images.manifests import ReleaseId

APP = "reg.example.com/team/app"
AUTOMATED = {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:~1.0"}
IMAGE = {"image": {"repository": APP, "tag": "1.0.0"}, "replicas": 1}


@dataclass
class Harness:
    kube: FakeKube = field(default_factory=FakeKube)
    registry: FakeRegistry = field(
        default_factory=lambda: FakeRegistry(
            {APP: {"1.0.0": at(1), "1.0.1": at(2), "1.0.5": at(3), "1.1.0": at(4)}}
        )
    )
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.service = ImagePolicyService(
            self.kube,
            self.registry,
            settings=ImagePolicySettings(**self.settings),
            metrics=AutomationMetrics.create(self.metrics),
        )

    async def cycle(self) -> CycleReport:
        return await self.service.run_cycle()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.get_sample_value(f"helmrelease_{name}", labels)


async def test_an_automated_release_moves_by_a_tested_patch_and_says_so() -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, AUTOMATED))

    report = await harness.cycle()

    assert harness.kube.patches == [
        [
            {"op": "test", "path": "/spec/values/image/tag", "value": "1.0.0"},
            {"op": "replace", "path": "/spec/values/image/tag", "value": "1.0.5"},
            {
                "op": "add",
                "path": "/metadata/annotations/image.helm.fluxcd.io~1written.chart-image",
                "value": "1.0.5",
            },
        ]
    ]
    assert harness.kube.values("web") == {"image": {"repository": APP, "tag": "1.0.5"}, "replicas": 1}
    assert harness.kube.events == [("web", "Normal", "ImageUpdated", f"{APP} 1.0.0 → 1.0.5 (semver:~1.0)")]
    assert [outcome.release for outcome in report.releases] == [ReleaseId("apps", "web")]
    assert not report.failed
    assert harness.sample("image_updates_total", target="cluster") == 1.0
    assert harness.sample("image_scan_duration_seconds_count") == 1.0
    assert harness.service.heartbeat.last_finished is not None


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({"fluxcd.io/tag.chart-image": "semver:~1.0"}, id="not-automated"),
        pytest.param({**AUTOMATED, "fluxcd.io/locked": "true"}, id="locked"),
        pytest.param({**AUTOMATED, "fluxcd.io/ignore": "true"}, id="ignored"),
        pytest.param(
            {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:>>1", "fluxcd.io/locked": "true"},
            id="locked-bad-policy",
        ),
    ],
)
async def test_held_releases_cost_nothing_and_say_nothing(annotations: dict[str, str]) -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, annotations))
    report = await harness.cycle()
    assert harness.kube.values("web") == IMAGE
    assert (harness.kube.events, harness.kube.patches, dict(harness.registry.requests)) == ([], [], {})
    assert report.releases[0].hold is not None


async def test_a_suspended_release_moves_no_image_and_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, AUTOMATED, suspend=True))
    with caplog.at_level(logging.INFO, logger="helmrelease.automation"):
        reports = [await harness.cycle(), await harness.cycle()]
    assert harness.kube.values("web") == IMAGE
    assert (harness.kube.patches, dict(harness.registry.requests)) == ([], {}), "not even scanned"
    assert [report.releases[0].hold for report in reports] == [Hold.SUSPENDED, Hold.SUSPENDED]
    said = [r.getMessage() for r in caplog.records if "suspended" in r.getMessage()]
    assert said == [
        "apps/web: suspended (spec.suspend: true): its image tags are not moved until it is resumed"
    ]
    harness.kube.add(release("web", IMAGE, AUTOMATED))  # resumed
    await harness.cycle()
    assert harness.kube.values("web")["image"]["tag"] == "1.0.5"


@pytest.mark.parametrize(
    ("user_tag", "final_tag", "patches"),
    [
        pytest.param("1.0.9", "1.0.9", 1, id="newer-pin-survives"),
        pytest.param("1.0.1", "1.0.5", 2, id="older-edit-is-decided-again"),
    ],
)
async def test_a_concurrent_edit_is_read_again_and_decided_again(
    user_tag: str, final_tag: str, patches: int
) -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, AUTOMATED))

    def user_edit(kube: FakeKube) -> None:
        kube.values("web")["image"]["tag"] = user_tag

    harness.kube.before_patch = user_edit
    report = await harness.cycle()

    assert harness.kube.values("web")["image"]["tag"] == final_tag
    assert harness.kube.calls["get"] == 1
    assert len(harness.kube.patches) == patches
    if patches == 2:
        assert harness.kube.patches[1][0] == {
            "op": "test",
            "path": "/spec/values/image/tag",
            "value": "1.0.1",
        }
    assert not report.failed


async def test_a_release_that_keeps_changing_is_left_for_the_next_cycle() -> None:
    harness = Harness(settings={"conflict_attempts": 3})
    harness.kube.add(release("web", IMAGE, AUTOMATED))
    harness.kube.patch_error = Conflict("HelmRelease apps/web: the object has been modified", 409)
    report = await harness.cycle()
    assert harness.kube.calls["patch"] == 3
    assert harness.kube.reasons() == ["ImageUpdateFailed"]
    assert "changed on each of 3 attempts" in harness.kube.events[0][3]
    assert report.failed
    assert harness.sample("image_update_failures_total", cause="conflict") == 1.0


@pytest.mark.parametrize(
    ("error", "rereads"),
    [
        pytest.param(
            KubeError("HelmRelease apps/web: the server rejected our request", 422), 0, id="other-error"
        ),
        pytest.param(Forbidden("HelmRelease apps/web: forbidden", 403), 0, id="forbidden"),
    ],
)
async def test_a_refused_patch_is_a_warning(error: KubeError, rereads: int) -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, AUTOMATED))
    harness.kube.patch_error = error
    report = await harness.cycle()
    assert harness.kube.reasons() == ["ImageUpdateFailed"]
    assert harness.kube.events[0][3] == f"cannot update the image tags: {error}"
    assert harness.kube.calls["get"] == rereads
    assert report.failed


async def test_an_invalid_patch_whose_values_still_hold_is_not_a_conflict() -> None:
    """kube-apiserver answers a failed ``test`` with a bare 422; a re-read tells it from an invalid patch."""

    class RefusesEveryPatch(FakeKube):
        async def json_patch_helmrelease(
            self, namespace: str, name: str, operations: list[dict[str, Any]]
        ) -> None:
            from helmrelease.adapters.kube import Invalid

            self.calls["patch"] += 1
            raise Invalid(f"HelmRelease {namespace}/{name}: spec.values.image.tag: Invalid value", 422)

    harness = Harness(kube=RefusesEveryPatch())
    harness.kube.add(release("web", IMAGE, AUTOMATED))
    report = await harness.cycle()
    assert (harness.kube.calls["patch"], harness.kube.calls["get"]) == (1, 1)
    assert harness.kube.reasons() == ["ImageUpdateFailed"]
    assert harness.sample("image_update_failures_total", cause="patch") == 1.0
    assert report.failed


async def test_a_release_deleted_meanwhile_is_simply_done() -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, AUTOMATED))
    harness.kube.before_patch = lambda kube: kube.objects.clear()
    harness.kube.patch_error = Conflict("gone", 409)
    report = await harness.cycle()
    assert harness.kube.events == []
    assert not report.failed


async def test_problems_are_warned_once_while_they_last() -> None:
    harness = Harness()
    harness.kube.add(
        release("web", {"image": {"repository": "reg.example.com/team/missing", "tag": "1.0.0"}}, AUTOMATED)
    )
    for _ in range(3):
        await harness.cycle()
    assert harness.kube.reasons() == ["ImageScanFailed"]
    assert harness.kube.events[0][3].startswith(
        "chart-image: registry reg.example.com, repository team/missing:"
    )
    assert harness.sample("image_update_failures_total", cause="registry") == 3.0


async def test_a_registry_failure_whose_wording_changes_every_request_is_warned_once() -> None:
    """A registry's error body may carry a request id or a time; the same failure is still one Warning, and
    another failure (a 401 after the 503s) is new."""
    harness = Harness()
    harness.kube.add(release("web", IMAGE, AUTOMATED))
    for request_id in ("a1", "b2", "c3"):
        harness.registry.failures[APP] = RegistryUnavailable(
            "reg.example.com", "team/app", f"tag list: HTTP 503 (request id {request_id})", status=503
        )
        await harness.cycle()
    harness.registry.failures[APP] = RegistryUnauthorized(
        "reg.example.com", "team/app", "tag list", status=401
    )
    await harness.cycle()
    assert harness.kube.reasons() == ["ImageScanFailed", "ImageScanFailed"]
    assert "request id a1" in harness.kube.events[0][3]
    assert "HTTP 503" not in harness.kube.events[1][3]
    assert harness.sample("image_update_failures_total", cause="registry") == 4.0


async def test_a_bad_policy_warns_and_the_other_images_still_move() -> None:
    harness = Harness()
    values = {"web": {"image": f"{APP}:1.0.0"}, "api": {"image": f"{APP}:1.0.0"}}
    annotations = {
        "fluxcd.io/automated": "true",
        "fluxcd.io/tag.web": "semver:>>1",
        "fluxcd.io/tag.api": "semver:~1.0",
    }
    harness.kube.add(release("hr", values, annotations))
    await harness.cycle()
    assert harness.kube.values("hr") == {"web": {"image": f"{APP}:1.0.0"}, "api": {"image": f"{APP}:1.0.5"}}
    assert harness.kube.reasons() == ["ImagePolicyInvalid", "ImageUpdated"]
    assert harness.sample("image_update_failures_total", cause="policy") == 1.0


async def test_an_unusable_pull_secret_stops_only_its_release() -> None:
    harness = Harness()
    harness.kube.add(
        release("private", IMAGE, {**AUTOMATED, "image.helm.fluxcd.io/pull-secret": "missing"}),
        release("public", IMAGE, AUTOMATED),
    )
    await harness.cycle()
    assert harness.kube.values("private") == IMAGE
    assert harness.kube.reasons("private") == ["ImageScanFailed"]
    assert harness.kube.values("public")["image"]["tag"] == "1.0.5"


async def test_a_failing_namespace_or_release_does_not_stop_the_others() -> None:
    class Broken(FakeRegistry):
        async def list_tags(self, name: Any, credentials: Any) -> tuple[str, ...]:
            if name.path == "team/bug":
                raise RuntimeError("a bug")
            return await super().list_tags(name, credentials)

    harness = Harness(
        registry=Broken({APP: {"1.0.0": at(1), "1.0.5": at(2)}}), settings={"namespaces": ("apps", "gone")}
    )
    harness.kube.list_errors["gone"] = Forbidden("HelmReleases in gone: forbidden", 403)
    harness.kube.add(
        release("buggy", {"image": "reg.example.com/team/bug:1.0.0"}, AUTOMATED),
        release("fine", IMAGE, AUTOMATED),
    )
    report = await harness.cycle()
    assert harness.kube.values("fine")["image"]["tag"] == "1.0.5"
    assert report.list_failures == 1
    assert report.failed
    assert harness.sample("image_update_failures_total", cause="internal") == 1.0
    assert harness.sample("image_update_failures_total", cause="list") == 1.0


async def test_a_release_with_nothing_newer_is_quiet() -> None:
    harness = Harness()
    harness.kube.add(release("web", {"image": f"{APP}:1.0.5"}, AUTOMATED))
    report = await harness.cycle()
    assert (harness.kube.events, harness.kube.patches, report.failed) == ([], [], False)


# --- git write-back -------------------------------------------------------------------------------------


MANIFEST = {
    "apiVersion": "helm.fluxcd.io/v1",
    "kind": "HelmRelease",
    "metadata": {"name": "web", "namespace": "apps"},
    "spec": {"values": {"image": {"repository": APP, "tag": "1.0.0"}}},
}


class FailingRepository(FakeRepository):
    async def apply_change(self, *args: Any, **kwargs: Any) -> Any:
        raise RemoteUnreachable("push", "Could not resolve host: git.example.com")


@pytest.mark.parametrize("repository_kind", ["working", "failing"])
async def test_git_goes_first_and_the_cluster_follows_only_what_git_holds(
    repository_kind: str, tmp_path: Path
) -> None:
    (tmp_path / "web.yaml").write_text(json.dumps(MANIFEST))  # JSON is YAML
    repository_type = FakeRepository if repository_kind == "working" else FailingRepository
    repository = repository_type(tmp_path)
    harness = Harness(settings={"git": GitWriteback(repository, all_releases=True)})
    harness.kube.add(release("web", IMAGE, AUTOMATED))

    report = await harness.cycle()

    if repository_kind == "working":
        assert harness.kube.values("web")["image"]["tag"] == "1.0.5"
        assert harness.kube.reasons() == ["ImageGitCommitted", "ImageUpdated"]
        assert harness.sample("image_updates_total", target="git") == 1.0
        assert report.releases[0].commit is not None
    else:
        assert harness.kube.values("web") == IMAGE
        assert harness.kube.reasons() == ["ImageGitWritebackFailed"]
        assert "the cluster is not updated either" in harness.kube.events[0][3]
        assert harness.kube.patches == []
        assert report.failed


async def test_asking_for_git_without_a_repository_updates_the_cluster_and_says_so() -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, {**AUTOMATED, "image.helm.fluxcd.io/git-writeback": "true"}))
    await harness.cycle()
    assert harness.kube.values("web")["image"]["tag"] == "1.0.5"
    assert harness.kube.reasons() == ["ImageAutomationWarning", "ImageUpdated"]


# --- the loop and its parts -----------------------------------------------------------------------------


async def test_the_loop_cycles_until_stopped_and_keeps_its_heartbeat() -> None:
    third_cycle = asyncio.Event()

    class Counting(FakeRegistry):
        def cycle(self) -> FakeRegistry:
            if self.cycles == 2:
                third_cycle.set()
            return super().cycle()

    harness = Harness(registry=Counting(), settings={"interval": 0.01})
    stop = asyncio.Event()
    task = asyncio.create_task(harness.service.run(stop))
    await asyncio.wait_for(third_cycle.wait(), 5)
    assert harness.service.heartbeat.running
    assert harness.service.heartbeat.healthy()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not harness.service.heartbeat.running
    assert not harness.service.heartbeat.healthy()


def test_repeat_filter() -> None:
    repeats = RepeatFilter()
    web, api = ObjectKey(ReleaseId("apps", "web"), "uid-1"), ObjectKey(ReleaseId("apps", "api"), "uid-2")
    assert [repeats.is_new(web, "a"), repeats.is_new(web, "a"), repeats.is_new(api, "a")] == [
        True,
        False,
        True,
    ]
    repeats.end_cycle()
    assert [repeats.is_new(web, "a"), repeats.is_new(web, "b")] == [False, True]
    repeats.end_cycle()
    repeats.end_cycle()  # a cycle without the problems
    assert repeats.is_new(web, "a")
    assert repeats.is_new(ObjectKey(web.release, "uid-3"), "a")  # deleted and created again: a new object


def test_repeat_filter_keeps_what_an_incomplete_cycle_did_not_see() -> None:
    repeats = RepeatFilter()
    web, api = ObjectKey(ReleaseId("apps", "web"), "1"), ObjectKey(ReleaseId("other", "api"), "2")
    repeats.is_new(web, "a")
    repeats.is_new(api, "b")
    repeats.end_cycle()
    repeats.seen(web)  # web was listed and is fine now; api's namespace could not be listed
    repeats.end_cycle(complete=False)
    assert [repeats.is_new(web, "a"), repeats.is_new(api, "b")] == [True, False]


async def test_a_warning_is_posted_once_per_object_and_value() -> None:
    """Resyncs say nothing new, nor does a cycle that could not list the release's namespace; an edit that
    changes the offending annotation is news, and so is a release deleted and created again."""
    harness = Harness(settings={"namespaces": ("apps", "gone")})
    annotations = {**AUTOMATED, "fluxcd.io/tag.wbe": "glob:*"}
    harness.kube.add(release("web", IMAGE, annotations, namespace="gone"))

    def warned() -> list[str]:
        return [
            text.split(" names")[0]
            for _, _, why, text in harness.kube.events
            if why == "ImageAutomationWarning"
        ]

    for _ in range(3):
        await harness.cycle()
    harness.kube.list_errors["gone"] = Forbidden("HelmReleases in gone: forbidden", 403)
    await harness.cycle()
    del harness.kube.list_errors["gone"]
    await harness.cycle()
    assert warned() == ["fluxcd.io/tag.wbe"]
    annotations = harness.kube.objects["gone", "web"]["metadata"]["annotations"]
    annotations["fluxcd.io/tag.wbe"] = "glob:1.*"
    await harness.cycle()
    assert warned() == ["fluxcd.io/tag.wbe"]  # the key is what is wrong, not the policy
    annotations["fluxcd.io/tag.wbb"] = annotations.pop("fluxcd.io/tag.wbe")
    await harness.cycle()
    await harness.cycle()
    harness.kube.objects["gone", "web"]["metadata"]["uid"] = "uid-web-2"
    await harness.cycle()
    assert warned() == ["fluxcd.io/tag.wbe", "fluxcd.io/tag.wbb", "fluxcd.io/tag.wbb"]
    assert harness.kube.calls["list"] == 2 * 9


@pytest.mark.parametrize(
    ("annotations", "warning"),
    [
        pytest.param(
            {"fluxcd.io/automated": "yes please", "fluxcd.io/tag.chart-image": "semver:~1.0"},
            """fluxcd.io/automated: 'yes please' is not "true" or "false", so automated is off""",
            id="not-automated-yes-please",
        ),
        pytest.param(
            {**AUTOMATED, "fluxcd.io/locked": "true", "flux.weave.works/locked": "false"},
            "fluxcd.io/locked: 'true' overrules flux.weave.works/locked: 'false' (fluxcd.io/locked comes first), "
            "so image automation is off for this release; remove the stale one or make them agree",
            id="locked-with-a-conflict",
        ),
        pytest.param(
            {"fluxcd.io/automated": "false", "flux.weave.works/automated": "true"},
            "fluxcd.io/automated: 'false' overrules flux.weave.works/automated: 'true' (fluxcd.io/automated "
            "comes first), so image automation is off for this release; remove the stale one or make them agree",
            id="stale-automated-false",
        ),
    ],
)
async def test_a_held_release_says_only_how_its_annotations_read(
    annotations: dict[str, str], warning: str
) -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, {**annotations, "fluxcd.io/tag.wbe": "glob:["}))
    for _ in range(2):
        report = await harness.cycle()
    assert harness.kube.events == [("web", "Warning", "ImageAutomationWarning", warning)]
    assert (harness.kube.patches, dict(harness.registry.requests)) == ([], {})
    assert report.releases[0].hold is not None
    assert not report.failed


async def test_a_misspelled_truth_is_a_warning_and_the_rest_still_moves() -> None:
    harness = Harness()
    harness.kube.add(release("web", IMAGE, {**AUTOMATED, "fluxcd.io/locked": "True"}))
    await harness.cycle()
    assert harness.kube.values("web")["image"]["tag"] == "1.0.5"
    assert harness.kube.reasons() == ["ImageAutomationWarning", "ImageUpdated"]


@pytest.mark.parametrize(
    ("policy", "reason", "message"),
    [
        pytest.param(
            "regex:^(a)\\1$",
            "ImagePolicyInvalid",
            "web: tag policy 'regex:^(a)\\\\1$' does not parse: regular expression '^(a)\\\\1$' does not "
            "compile (RE2 syntax, Go's regexp as in Flux v1): invalid escape sequence: \\1; backreferences "
            "need backtracking, which RE2 (linear time) does not do; its tag is not updated",
            id="backreference",
        ),
        pytest.param(
            "semver:>=" + "1" * 5000,
            "ImagePolicyInvalid",
            "version numbers are at most 18446744073709551615 (uint64); its tag is not updated",
            id="a-number-too-big-for-int",
        ),
        pytest.param(
            "glob:[",
            "ImageAutomationWarning",
            "web: glob pattern '[' matches no tag: '*' is the only wildcard",
            id="glob-matching-nothing",
        ),
    ],
)
async def test_a_hostile_or_hopeless_policy_warns_and_holds_up_nobody(
    policy: str, reason: str, message: str
) -> None:
    harness = Harness(
        registry=FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(2), "a" * 36 + "-": at(3), "aa": at(4)}})
    )
    values = {"web": {"image": f"{APP}:1.0.0"}, "api": {"image": f"{APP}:1.0.0"}}
    hostile = {"fluxcd.io/automated": "true", "fluxcd.io/tag.web": policy, "fluxcd.io/tag.api": "semver:~1.0"}
    harness.kube.add(
        release("hostile", values, hostile),
        release("other", IMAGE, AUTOMATED),
        release(
            "catastrophic",
            IMAGE,
            {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "regex:^(a+)+$"},
        ),
    )
    await harness.cycle()
    assert harness.kube.values("hostile") == {
        "web": {"image": f"{APP}:1.0.0"},
        "api": {"image": f"{APP}:1.0.5"},
    }
    assert harness.kube.values("other")["image"]["tag"] == "1.0.5"
    assert harness.kube.values("catastrophic")["image"]["tag"] == "aa"
    [(kind, text)] = [(kind, text) for name, kind, why, text in harness.kube.events if why == reason]
    assert kind == "Warning"
    assert message in text


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"interval": 0}, id="zero-interval"),
        pytest.param({"conflict_attempts": 0}, id="no-attempts"),
    ],
)
def test_settings_are_checked(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ImagePolicySettings(**settings)


async def test_unavailable_registry_message_reaches_the_event() -> None:
    harness = Harness()
    harness.registry.failures[APP] = RegistryUnavailable("reg.example.com", "team/app", "tag list: timed out")
    harness.kube.add(release("web", IMAGE, AUTOMATED))
    await harness.cycle()
    [(_, kind, reason, message)] = harness.kube.events
    assert (kind, reason) == ("Warning", "ImageScanFailed")
    assert "check that reg.example.com is up and reachable" in message


@pytest.mark.parametrize(
    "user_edit",
    [
        pytest.param({"fluxcd.io/locked": "true"}, id="locks"),
        pytest.param({"fluxcd.io/automated": "false"}, id="stops-automation"),
        pytest.param({"fluxcd.io/tag.chart-image": "glob:0.*"}, id="changes-the-policy"),
    ],
)
async def test_an_annotation_edit_between_our_read_and_write_is_never_overwritten(
    user_edit: dict[str, str],
) -> None:
    """The tag test alone let a lock (or a new policy) set meanwhile through: the annotations are tested too."""
    harness = Harness()
    obj = release("web", IMAGE, AUTOMATED)
    obj["metadata"]["resourceVersion"] = "7"
    harness.kube.add(obj)

    def edit(kube: FakeKube) -> None:
        metadata = kube.objects["apps", "web"]["metadata"]
        metadata["annotations"].update(user_edit)
        metadata["resourceVersion"] = "8"  # what the API server does on every write

    harness.kube.before_patch = edit
    report = await harness.cycle()
    assert harness.kube.patches[0][0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert harness.kube.values("web")["image"]["tag"] == "1.0.0"
    assert harness.kube.calls["get"] == 1  # re-read, decided again from the edit: nothing to write
    assert "ImageUpdated" not in harness.kube.reasons()
    assert not report.failed


async def test_a_write_that_changed_nothing_we_decided_from_is_retried_not_failed() -> None:
    """The operator's status write moves the resourceVersion too: the patch is made again, not reported."""
    harness = Harness()
    obj = release("web", IMAGE, AUTOMATED)
    obj["metadata"]["resourceVersion"] = "7"
    harness.kube.add(obj)

    def status_write(kube: FakeKube) -> None:
        kube.objects["apps", "web"]["metadata"]["resourceVersion"] = "8"

    harness.kube.before_patch = status_write
    report = await harness.cycle()
    assert [patch[0]["value"] for patch in harness.kube.patches] == ["7", "8"]
    assert harness.kube.values("web")["image"]["tag"] == "1.0.5"
    assert harness.kube.reasons() == ["ImageUpdated"]
    assert not report.failed


@pytest.mark.parametrize(
    ("shard", "scanned"),
    [
        pytest.param(None, ["plain"], id="unsharded-scans-the-unlabelled"),
        pytest.param("a", ["in-a"], id="shard-a-scans-its-own"),
    ],
)
async def test_a_sharded_sidecar_scans_only_its_shard(shard: str | None, scanned: list[str]) -> None:
    harness = Harness(settings={"shard": shard})
    for name, value in (("plain", None), ("in-a", "a"), ("in-b", "b")):
        obj = release(name, IMAGE, AUTOMATED)
        if value is not None:
            obj["metadata"]["labels"] = {"sharding.helm.fluxcd.io/key": value}
        harness.kube.add(obj)

    report = await harness.cycle()

    assert [outcome.release.name for outcome in report.releases] == scanned
    assert harness.kube.selectors == [
        "!sharding.helm.fluxcd.io/key" if shard is None else f"sharding.helm.fluxcd.io/key={shard}"
    ]
    assert (
        sorted(
            name for (_, name) in harness.kube.objects if harness.kube.values(name)["image"]["tag"] != "1.0.0"
        )
        == scanned
    )
