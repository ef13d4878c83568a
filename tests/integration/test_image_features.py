"""Image automation beyond Flux v1, against the real registry and control plane: pinned digests, soak time,
pauses after someone sets an image back, equal versions, and warnings about annotations that hold a release.

Cycles run in-process (``one_cycle``, as ``image-policy --once`` wires them) where a test drives them one by
one; soak time runs the real sidecar process, since the point is that it moves on a later cycle by itself.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry
from tests.integration.test_git_writeback import Remote
from tests.integration.test_image_policy import (
    AUTOMATED,
    FAST_RETRY,
    GROUP,
    PLURAL,
    VERSION,
    Releases,
    one_cycle,
    releases,
    remote,
    seed,
)
from tests.integration.test_image_policy_cli import _environment, sidecar_args
from tests.support.registry import ImagePusher, Registry, utc
from tests.support.wait import eventually

from helmrelease.adapters.git import GitRemote, GitRepository
from helmrelease.adapters.kube import IMAGE_POLICY_FIELD_MANAGER, KubeClient
from helmrelease.adapters.registry import RegistryConfig, RegistryMetrics
from helmrelease.automation import (
    AutomationMetrics,
    GitWriteback,
    ImagePolicyService,
    ImagePolicySettings,
    RegistryPool,
)
from helmrelease.automation.watched import field_setter

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["releases", "remote"]  # fixtures shared with test_image_policy

SEMVER = {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}
PIN = {**SEMVER, "image.helm.fluxcd.io/pin-digest.chart-image": "true"}
PAUSED = "image.helm.fluxcd.io/paused.chart-image"
WRITTEN = "image.helm.fluxcd.io/written.chart-image"


def fresh_repository(pusher: ImagePusher, *tags: tuple[str, float]) -> tuple[str, dict[str, str]]:
    """A new repository with ``tags`` (tag, minutes ago); its name and each tag's digest."""
    repository = f"team/feature-{uuid.uuid4().hex[:8]}"
    digests = {tag: pusher.push(repository, tag, created=utc(minutes)) for tag, minutes in tags}
    return f"{pusher.registry.host}/{repository}", digests


def annotations(releases: Releases, name: str) -> dict[str, str]:
    found: dict[str, str] = releases.get(name)["metadata"].get("annotations", {})
    return found


# --- semver, then pin the digest -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        pytest.param(
            lambda image: {"image": f"{image}:1.0.0"},
            lambda image, digest: {"image": f"{image}:1.0.5@{digest}"},
            id="combined-reference",
        ),
        pytest.param(
            lambda image: {"image": {"repository": image, "tag": "1.0.0", "digest": ""}},
            lambda image, digest: {"image": {"repository": image, "tag": "1.0.5", "digest": digest}},
            id="sibling-digest-value",
        ),
    ],
)
async def test_semver_then_the_digest_and_a_tag_pushed_again_is_its_own_update(
    shape: Any,
    expected: Any,
    pusher: ImagePusher,
    registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    image, digests = fresh_repository(pusher, ("1.0.0", 30), ("1.0.5", 20), ("1.1.0", 10))
    releases.create("hr", shape(image), PIN)

    await one_cycle(api_client, namespace, registry.host)
    first = digests["1.0.5"]
    assert releases.values("hr") == expected(image, first)
    assert annotations(releases, "hr")[WRITTEN] == f"1.0.5@{first}"

    again = pusher.push(image.partition("/")[2], "1.0.5", created=utc(1))  # same tag, new content
    assert again != first
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr") == expected(image, again)
    assert [move.summary for move in report.moves] == [
        f"{image} 1.0.5 digest {first} → {again} (semver:~1.0)"
    ]
    assert sorted(releases.events("hr", "ImageUpdated")) == sorted(  # Events order by the second only
        [
            ("Normal", "ImageUpdated", f"{image} 1.0.0 → 1.0.5 digest (none) → {first} (semver:~1.0)"),
            ("Normal", "ImageUpdated", f"{image} 1.0.5 digest {first} → {again} (semver:~1.0)"),
        ]
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert (report.moves, len(releases.events("hr", "ImageUpdated"))) == ((), 2)


PINNED_MANIFEST = """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: hr
  namespace: {namespace}
  annotations:
    fluxcd.io/automated: "true"
    fluxcd.io/tag.chart-image: semver:~1.0
    image.helm.fluxcd.io/pin-digest.chart-image: "true"
    image.helm.fluxcd.io/git-writeback: "true"
spec:
  chart: {{repository: "http://charts.example.invalid/", name: app, version: 0.1.0}}
  values:
    image:
      repository: {image}   # pinned by the sidecar
      tag: {tag}
      digest: "{digest}"
"""


async def test_git_writeback_writes_the_same_tag_and_digest_as_the_cluster(
    pusher: ImagePusher,
    registry: Registry,
    releases: Releases,
    remote: Remote,
    tmp_path: Path,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    image, digests = fresh_repository(pusher, ("1.0.0", 30), ("1.0.5", 20))
    seed(
        remote, {"hr.yaml": PINNED_MANIFEST.format(namespace=namespace, image=image, tag="1.0.0", digest="")}
    )
    releases.create(
        "hr",
        {"image": {"repository": image, "tag": "1.0.0", "digest": ""}},
        {**PIN, "image.helm.fluxcd.io/git-writeback": "true"},
    )
    git = GitWriteback(GitRepository(GitRemote(remote.url, "main"), tmp_path / "git-state"))

    await one_cycle(api_client, namespace, registry.host, git=git)
    first = digests["1.0.5"]
    assert remote.show("hr.yaml") == PINNED_MANIFEST.format(
        namespace=namespace, image=image, tag="1.0.5", digest=first
    )
    assert releases.values("hr")["image"] == {"repository": image, "tag": "1.0.5", "digest": first}

    again = pusher.push(image.partition("/")[2], "1.0.5", created=utc(1))
    report, _ = await one_cycle(api_client, namespace, registry.host, git=git)
    assert remote.changed_lines() == [f'-      digest: "{first}"', f'+      digest: "{again}"']
    assert releases.values("hr")["image"]["digest"] == again
    assert [move.summary for move in report.moves] == [
        f"{image} 1.0.5 digest {first} → {again} (semver:~1.0)"
    ]
    assert remote.count() == 3


# --- soak time -------------------------------------------------------------------------------------


@pytest.fixture
def sidecar_log(tmp_path: Path) -> Path:
    return tmp_path / "sidecar.log"


@pytest.fixture
def soaking_sidecar(
    registry: Registry, kubeconfig: Path, namespace: str, tmp_path: Path, sidecar_log: Path
) -> Iterator[subprocess.Popen[str]]:
    args = sidecar_args(
        kubeconfig,
        namespace,
        registry,
        "--interval",
        "0.5",
        "--health-port",
        "0",
        "--metrics-port",
        "0",
        "--log-level",
        "debug",
        "--state-dir",
        str(tmp_path / "state"),
    )
    with sidecar_log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "helmrelease", *args],
            stdout=log,
            stderr=log,
            text=True,
            env=_environment(),
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def test_a_new_tag_moves_on_the_first_cycle_after_its_min_age_without_a_push(
    pusher: ImagePusher,
    releases: Releases,
    soaking_sidecar: subprocess.Popen[str],
    sidecar_log: Path,
    tmp_path: Path,
) -> None:
    image, _ = fresh_repository(pusher, ("1.0.0", 60))
    soak = {**SEMVER, "image.helm.fluxcd.io/min-age.chart-image": "3s"}
    releases.create("hr", {"image": {"repository": image, "tag": "1.0.0"}}, soak)
    eventually(lambda: "hr" in sidecar_log.read_text(), 60, "the sidecar to look at hr")
    pushed = time.time()
    pusher.push(image.partition("/")[2], "1.0.5", created=utc(0))

    def soaking() -> bool:
        assert soaking_sidecar.poll() is None, sidecar_log.read_text()[-3000:]
        return "1.0.5 is newer than 1.0.0, but it soaks until" in sidecar_log.read_text()

    eventually(
        soaking,
        60,
        "a cycle to hold 1.0.5 back for its soak",
        context=lambda: sidecar_log.read_text()[-3000:],
    )
    assert releases.values("hr")["image"]["tag"] == "1.0.0"

    eventually(
        lambda: releases.values("hr")["image"]["tag"] == "1.0.5",
        60,
        "the move once 1.0.5 soaked",
        context=lambda: sidecar_log.read_text()[-3000:],
    )
    assert time.time() - pushed >= 3
    moved = [("Normal", "ImageUpdated", f"{image} 1.0.0 → 1.0.5 (semver:~1.0)")]
    eventually(lambda: releases.events("hr", "ImageUpdated") == moved, 30, "the Event posted after the patch")
    seen = json.loads((tmp_path / "state" / "first-seen.json").read_text())
    assert set(seen[image]) == {"1.0.0", "1.0.5"}


async def test_an_unreadable_min_age_is_a_warning_not_a_move(
    pusher: ImagePusher, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    image, _ = fresh_repository(pusher, ("1.0.0", 60), ("1.0.5", 30))
    releases.create(
        "hr",
        {"image": {"repository": image, "tag": "1.0.0"}},
        {**SEMVER, "image.helm.fluxcd.io/min-age.chart-image": "1 hour"},
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert (report.moves, releases.values("hr")["image"]["tag"]) == ((), "1.0.0")
    [(kind, reason, message)] = releases.events("hr")
    assert (kind, reason) == ("Warning", "ImageAutomationWarning")
    assert message.startswith("image.helm.fluxcd.io/min-age.chart-image: '1 hour' is not a duration")


# --- revert awareness ------------------------------------------------------------------------------


async def test_a_tag_set_back_by_a_person_pauses_the_image_until_they_resume_it(
    pusher: ImagePusher,
    registry: Registry,
    releases: Releases,
    custom: k8s.CustomObjectsApi,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    image, _ = fresh_repository(pusher, ("1.0.0", 30), ("1.0.5", 20))
    releases.create("hr", {"image": {"repository": image, "tag": "1.0.0"}}, SEMVER)
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr")["image"]["tag"] == "1.0.5"
    tag_path = ("spec", "values", "image", "tag")
    setter = field_setter(releases.get("hr")["metadata"]["managedFields"], tag_path)
    assert setter is not None
    assert setter.manager == IMAGE_POLICY_FIELD_MANAGER

    # What `kubectl edit` sends: a merge patch under its own field manager.
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "hr",
        {"spec": {"values": {"image": {"tag": "1.0.0"}}}},
        field_manager="kubectl-edit",
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert (report.moves, report.releases[0].paused) == ((), ("chart-image",))
    assert releases.values("hr")["image"]["tag"] == "1.0.0"
    note = annotations(releases, "hr")[PAUSED]
    assert note.startswith("1.0.0 set by kubectl-edit at 20"), note
    assert releases.events("hr", "ImagePaused") == [
        (
            "Normal",
            "ImagePaused",
            f"chart-image: {note}, behind 1.0.5 that image automation wrote; automation of chart-image is "
            f"paused so that choice stands. To resume, remove the annotation: kubectl annotate helmrelease hr {PAUSED}-",
        )
    ]

    report, _ = await one_cycle(api_client, namespace, registry.host)  # had its chance: nothing moves
    assert (report.moves, releases.values("hr")["image"]["tag"]) == ((), "1.0.0")
    assert len(releases.events("hr", "ImagePaused")) == 1

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "hr", {"metadata": {"annotations": {PAUSED: None}}}
    )
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr")["image"]["tag"] == "1.0.5"


async def test_a_tag_moved_forward_by_hand_is_no_step_back(
    pusher: ImagePusher,
    registry: Registry,
    releases: Releases,
    custom: k8s.CustomObjectsApi,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    image, _ = fresh_repository(pusher, ("1.0.0", 30), ("1.0.3", 25), ("1.0.5", 20))
    releases.create(
        "hr",
        {"image": {"repository": image, "tag": "1.0.0"}},
        {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:<1.0.4"},
    )
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr")["image"]["tag"] == "1.0.3"
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "hr",
        {"spec": {"values": {"image": {"tag": "1.0.5"}}}},
        field_manager="kubectl-edit",
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert (report.releases[0].paused, releases.events("hr", "ImagePaused")) == ((), [])
    assert PAUSED not in annotations(releases, "hr")


# --- smaller fixes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        pytest.param(("1.10.0", "1.10"), "1.10.0", id="partial-and-full"),
        pytest.param(("1.2.3", "v1.2.3"), "v1.2.3", id="v-prefix"),
    ],
)
async def test_of_two_spellings_of_one_version_the_more_explicit_wins(
    tags: tuple[str, str],
    expected: str,
    pusher: ImagePusher,
    registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    image, _ = fresh_repository(pusher, ("1.0.0", 30), *((tag, 10) for tag in tags))
    releases.create("hr", {"image": f"{image}:1.0.0"}, {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:*"})
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr") == {"image": f"{image}:{expected}"}


async def test_a_stale_spelling_that_turns_automation_off_is_said_once_by_the_sidecar(
    pusher: ImagePusher,
    registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image, _ = fresh_repository(pusher, ("1.0.0", 30), ("1.0.5", 20))
    stale = {
        "fluxcd.io/automated": "false",
        "flux.weave.works/automated": "true",
        "fluxcd.io/tag.chart-image": "semver:~1.0",
    }
    releases.create("hr", {"image": f"{image}:1.0.0"}, stale)
    metrics = CollectorRegistry()
    pool = RegistryPool(
        RegistryConfig(insecure_hosts=frozenset({registry.host}), retry=FAST_RETRY),
        RegistryMetrics.create(metrics),
    )
    service = ImagePolicyService(
        KubeClient(api_client),
        pool,
        settings=ImagePolicySettings(namespaces=(namespace,)),
        metrics=AutomationMetrics.create(metrics),
    )
    message = (
        "fluxcd.io/automated: 'false' overrules flux.weave.works/automated: 'true' (fluxcd.io/automated comes "
        "first), so image automation is off for this release; remove the stale one or make them agree"
    )
    try:
        with caplog.at_level(logging.WARNING, logger="helmrelease.automation.service"):
            for _ in range(2):
                report = await service.run_cycle()
    finally:
        await pool.close()
    assert report.releases[0].hold is not None
    assert releases.events("hr") == [("Warning", "ImageAutomationWarning", message)]
    assert [record.getMessage() for record in caplog.records] == [f"{namespace}/hr: {message}"]
    assert releases.values("hr") == {"image": f"{image}:1.0.0"}
