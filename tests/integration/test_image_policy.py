"""The image-policy loop against the real registry and control plane: one cycle in-process per test.

Each test gets a fresh namespace and the loop is scoped to it, so releases of other tests never take part.
The registry holds real OCI images (config blobs with their build times, one multi-platform index), and the
cluster is a real kube-apiserver: JSON-patch tests, Events and Secrets are the API server's own behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry
from tests.integration.test_git_writeback import Remote
from tests.support.operator import GROUP, PLURAL, VERSION, events_for, get_hr, helmrelease
from tests.support.procs import free_port
from tests.support.registry import ImagePusher, Registry, utc

from helmrelease.adapters.git import Author, GitRemote, GitRepository
from helmrelease.adapters.kube import KubeClient
from helmrelease.adapters.registry import CredentialStore, RegistryConfig, RegistryMetrics, RetryPolicy
from helmrelease.automation import (
    AutomationMetrics,
    CycleReport,
    GitWriteback,
    Hold,
    ImagePolicyService,
    ImagePolicySettings,
    RegistryPool,
)

pytestmark = pytest.mark.usefixtures("crd_installed")

CHART = {"repository": "http://charts.example.invalid/", "name": "app", "version": "0.1.0"}
AUTOMATED = {"fluxcd.io/automated": "true"}
# (tag, minutes ago): semver order and build-time order disagree on purpose.
TAGS = (
    ("1.0.0", 60),
    ("1.0.5", 50),
    ("1.1.0", 40),
    ("2.0.0", 30),
    ("1.0.2", 10),  # pushed as a multi-platform index: its build time is read through the amd64 entry
    ("1.1.1-rc.1", 5),
    ("latest", 1),
)
MULTI_PLATFORM = (("linux", "amd64"), ("linux", "arm64"))
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)


def push_tags(pusher: ImagePusher, repository: str) -> str:
    for tag, minutes in TAGS:
        platforms = MULTI_PLATFORM if tag == "1.0.2" else (("linux", "amd64"),)
        pusher.push(repository, tag, created=utc(minutes), platforms=platforms)
    return f"{pusher.registry.host}/{repository}"


@pytest.fixture(scope="module")
def app(pusher: ImagePusher) -> str:
    """``<registry>/team/app-<id>`` holding every tag of ``TAGS``."""
    return push_tags(pusher, f"team/app-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True)
class Releases:
    """HelmReleases and their Events in the test's namespace, through the plain API."""

    custom: k8s.CustomObjectsApi
    core: k8s.CoreV1Api
    namespace: str

    def create(
        self, name: str, values: dict[str, Any], annotations: dict[str, str] | None = None, **spec: Any
    ) -> None:
        body = helmrelease(name, CHART, values, **spec)
        body["metadata"]["annotations"] = dict(annotations if annotations is not None else AUTOMATED)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        return get_hr(self.custom, self.namespace, name)

    def values(self, name: str) -> dict[str, Any]:
        values: dict[str, Any] = self.get(name)["spec"].get("values", {})
        return values

    def patch(self, name: str, body: Any) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body)

    def events(self, name: str, reason: str | None = None) -> list[tuple[str, str, str]]:
        return [event for event in events_for(self.core, self.namespace, name) if reason in (None, event[1])]


@pytest.fixture
def releases(custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api, namespace: str) -> Releases:
    return Releases(custom, core, namespace)


async def one_cycle(
    api_client: k8s.ApiClient,
    namespace: str,
    *insecure_hosts: str,
    kube: KubeClient | None = None,
    git: GitWriteback | None = None,
    credentials: CredentialStore | None = None,
) -> tuple[CycleReport, CollectorRegistry]:
    """One cycle of the sidecar, as ``helmrelease image-policy --once`` wires it, scoped to ``namespace``."""
    metrics = CollectorRegistry()
    pool = RegistryPool(
        RegistryConfig(insecure_hosts=frozenset(insecure_hosts), retry=FAST_RETRY),
        RegistryMetrics.create(metrics),
    )
    service = ImagePolicyService(
        kube or KubeClient(api_client),
        pool,
        settings=ImagePolicySettings(namespaces=(namespace,), git=git),
        metrics=AutomationMetrics.create(metrics),
        operator_credentials=credentials,
    )
    try:
        return await service.run_cycle(), metrics
    finally:
        await pool.close()


def with_value(values: dict[str, Any], path: tuple[str, ...], value: str) -> dict[str, Any]:
    expected = copy.deepcopy(values)
    node = expected
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return expected


# --- where tags are written ---------------------------------------------------------------------------


def _shapes(host: str, repository: str) -> list[Any]:
    image = f"{host}/{repository}"
    return [
        pytest.param(
            {"image": f"{image}:1.0.0", "replicas": 2},
            {},
            "chart-image",
            ("image",),
            f"{image}:1.0.5",
            id="image-string",
        ),
        pytest.param(
            {"image": image, "tag": "1.0.0"}, {}, "chart-image", ("tag",), "1.0.5", id="image-and-tag"
        ),
        pytest.param(
            {"registry": host, "image": repository, "tag": "1.0.0"},
            {},
            "chart-image",
            ("tag",),
            "1.0.5",
            id="registry-image-tag",
        ),
        pytest.param(
            {"image": {"repository": image, "tag": "1.0.0", "pullPolicy": "IfNotPresent"}},
            {},
            "chart-image",
            ("image", "tag"),
            "1.0.5",
            id="image-map",
        ),
        pytest.param(
            {"image": {"registry": host, "repository": repository, "tag": "1.0.0"}},
            {},
            "chart-image",
            ("image", "tag"),
            "1.0.5",
            id="image-map-with-registry",
        ),
        pytest.param(
            {"persistent": True, "api": {"image": f"{image}:1.0.0", "port": 4040}},
            {},
            "api",
            ("api", "image"),
            f"{image}:1.0.5",
            id="subsection-string",
        ),
        pytest.param(
            {"api": {"image": {"repository": image, "tag": "1.0.0"}}},
            {},
            "api",
            ("api", "image", "tag"),
            "1.0.5",
            id="subsection-map",
        ),
        pytest.param(
            {"deploy": {"web": {"repo": image, "version": "1.0.0"}}},
            {"repository.fluxcd.io/web": "deploy.web.repo", "tag.fluxcd.io/web": "deploy.web.version"},
            "web",
            ("deploy", "web", "version"),
            "1.0.5",
            id="alias-annotations",
        ),
    ]


SHAPE_IDS = [case.id for case in _shapes("127.0.0.1:1", "team/app")]


@pytest.mark.parametrize("shape", SHAPE_IDS)
async def test_each_shape_changes_exactly_its_tag_value_and_posts_an_event(
    shape: str, app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    repository = app.removeprefix(f"{registry.host}/")
    case = next(case for case in _shapes(registry.host, repository) if case.id == shape)
    values, aliases, container, path, new_value = case.values
    releases.create("hr", values, {**AUTOMATED, f"fluxcd.io/tag.{container}": "semver:~1.0", **aliases})

    report, _ = await one_cycle(api_client, namespace, registry.host)

    assert releases.values("hr") == with_value(values, path, new_value)
    assert [(m.old_tag, m.new_tag) for m in report.moves] == [("1.0.0", "1.0.5")]
    assert releases.events("hr", "ImageUpdated") == [
        ("Normal", "ImageUpdated", f"{app} 1.0.0 → 1.0.5 (semver:~1.0)")
    ]
    assert not report.failed


# --- policies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param({"fluxcd.io/tag.chart-image": "semver:~1.0"}, "1.0.5", id="semver-tilde"),
        pytest.param({"fluxcd.io/tag.chart-image": "semver:^1"}, "1.1.0", id="semver-caret-no-prerelease"),
        pytest.param(
            {"flux.weave.works/tag.chart-image": "semver:>=1.1.0-0"}, "2.0.0", id="semver-weave-prefix"
        ),
        pytest.param({"fluxcd.io/tag.chart-image": "glob:1.0.*"}, "1.0.2", id="glob-newest-build-multiarch"),
        pytest.param(
            {"filter.fluxcd.io/chart-image": r"regex:^1\.1\."}, "1.1.1-rc.1", id="regex-newest-build"
        ),
        pytest.param({}, "1.1.1-rc.1", id="default-glob-star-never-latest"),
        pytest.param(
            {"fluxcd.io/tag.chart-image": "glob:1.0.*", "fluxcd.io/tag-order.chart-image": "alphabetical"},
            "1.0.5",
            id="glob-alphabetical-order",
        ),
    ],
)
async def test_policies_choose_the_tag(
    annotations: dict[str, str],
    expected: str,
    app: str,
    registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    releases.create("hr", {"image": {"repository": app, "tag": "1.0.0"}}, {**AUTOMATED, **annotations})
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr")["image"]["tag"] == expected


async def test_a_newer_current_tag_is_never_downgraded(
    app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    releases.create(
        "hr", {"image": f"{app}:1.0.9"}, {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr") == {"image": f"{app}:1.0.9"}
    assert report.moves == ()
    assert releases.events("hr") == []


# --- what must never change -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "events"),
    [
        pytest.param({}, [], id="not-automated"),
        pytest.param(
            {"fluxcd.io/automated": "True"},
            [
                (
                    "Warning",
                    "ImageAutomationWarning",
                    """fluxcd.io/automated: 'True' is not "true" or "false", so automated is off""",
                )
            ],
            id="automated-not-exactly-true-says-why",
        ),
        pytest.param({**AUTOMATED, "fluxcd.io/locked": "true"}, [], id="locked"),
        pytest.param({**AUTOMATED, "flux.weave.works/locked": "true"}, [], id="locked-weave-prefix"),
        pytest.param({**AUTOMATED, "fluxcd.io/ignore": "true"}, [], id="ignored"),
    ],
)
async def test_held_releases_never_change(
    annotations: dict[str, str],
    events: list[tuple[str, str, str]],
    app: str,
    registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    values = {"image": {"repository": app, "tag": "1.0.0"}}
    releases.create("held", values, annotations)
    releases.create("moving", values)  # the same image, automated: proves the cycle did run
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("held") == values
    assert releases.events("held") == events
    assert releases.values("moving")["image"]["tag"] == "1.1.1-rc.1"


async def test_a_suspended_release_is_not_moved_until_it_is_resumed(
    app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    values = {"image": {"repository": app, "tag": "1.0.0"}}
    releases.create("suspended", values, suspend=True)  # the CRD takes spec.suspend
    releases.create("moving", values)  # the same image, automated: proves the cycle did run
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert releases.values("suspended") == values
    assert releases.values("moving")["image"]["tag"] == "1.1.1-rc.1"
    assert {outcome.release.name: outcome.hold for outcome in report.releases}["suspended"] is Hold.SUSPENDED
    assert releases.events("suspended") == []
    releases.patch("suspended", {"spec": {"suspend": False}})
    await one_cycle(api_client, namespace, registry.host)
    assert releases.values("suspended")["image"]["tag"] == "1.1.1-rc.1"


async def test_a_policy_that_does_not_parse_changes_nothing_and_warns(
    app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    values = {"bad": {"image": f"{app}:1.0.0"}, "good": {"image": f"{app}:1.0.0"}}
    releases.create(
        "hr",
        values,
        {**AUTOMATED, "fluxcd.io/tag.bad": "semver:~>x.y", "fluxcd.io/tag.good": "semver:~1.0"},
    )
    report, _ = await one_cycle(api_client, namespace, registry.host)
    assert releases.values("hr") == {"bad": {"image": f"{app}:1.0.0"}, "good": {"image": f"{app}:1.0.5"}}
    warnings = releases.events("hr", "ImagePolicyInvalid")
    assert len(warnings) == 1
    assert warnings[0][0] == "Warning"
    assert warnings[0][2].startswith("bad: tag policy 'semver:~>x.y' does not parse")
    assert report.failed


# --- a user's edit survives -----------------------------------------------------------------------------


class UserEditsFirst(KubeClient):
    """A kube client whose first patch comes right after a user's edit: the race, made certain."""

    def __init__(self, api_client: k8s.ApiClient, user_edit: Callable[[], None]) -> None:
        super().__init__(api_client)
        self.user_edit = user_edit
        self.patches: list[list[dict[str, Any]]] = []
        self.rereads = 0

    async def json_patch_helmrelease(
        self, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None:
        if not self.patches:
            await asyncio.to_thread(self.user_edit)
        self.patches.append(operations)
        await super().json_patch_helmrelease(namespace, name, operations)

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]:
        self.rereads += 1
        return await super().get_helmrelease(namespace, name)


@pytest.mark.parametrize(
    ("user_edit", "expected_tag", "expected_annotations"),
    [
        pytest.param({"spec": {"values": {"image": {"tag": "1.0.9"}}}}, "1.0.9", {}, id="pins-a-newer-tag"),
        pytest.param(
            {
                "metadata": {"annotations": {"fluxcd.io/locked": "true"}},
                "spec": {"values": {"image": {"tag": "1.0.2"}}},
            },
            "1.0.2",
            {"fluxcd.io/locked": "true"},
            id="locks-and-pins",
        ),
        pytest.param(
            {"spec": {"values": {"image": {"tag": "1.0.1"}}}}, "1.0.5", {}, id="older-tag-is-redecided"
        ),
    ],
)
async def test_a_concurrent_user_edit_is_reread_and_never_overwritten(
    user_edit: dict[str, Any],
    expected_tag: str,
    expected_annotations: dict[str, str],
    app: str,
    registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    annotations = {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}
    releases.create("hr", {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1}, annotations)
    kube = UserEditsFirst(api_client, lambda: releases.patch("hr", user_edit))

    await one_cycle(api_client, namespace, registry.host, kube=kube)

    written = "image.helm.fluxcd.io/written.chart-image"
    assert kube.patches[0][0]["path"] == "/metadata/resourceVersion"  # whatever the user edits, we see it
    assert kube.patches[0][1:] == [
        {"op": "test", "path": "/spec/values/image/tag", "value": "1.0.0"},
        {"op": "replace", "path": "/spec/values/image/tag", "value": "1.0.5"},
        {"op": "add", "path": f"/metadata/annotations/{written.replace('/', '~1')}", "value": "1.0.5"},
    ]
    assert kube.rereads == 1
    hr = releases.get("hr")
    assert hr["spec"]["values"] == {"image": {"repository": app, "tag": expected_tag}, "replicas": 1}
    record = {written: "1.0.5"} if expected_tag == "1.0.5" else {}  # only what the sidecar wrote itself
    assert hr["metadata"]["annotations"] == {**annotations, **expected_annotations, **record}
    updated = releases.events("hr", "ImageUpdated")
    assert updated == (
        [] if expected_tag != "1.0.5" else [("Normal", "ImageUpdated", f"{app} 1.0.1 → 1.0.5 (semver:~1.0)")]
    )


async def test_an_edit_elsewhere_in_the_release_does_not_stop_the_update(
    app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    releases.create("hr", {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1})
    kube = UserEditsFirst(api_client, lambda: releases.patch("hr", {"spec": {"values": {"replicas": 3}}}))
    await one_cycle(api_client, namespace, registry.host, kube=kube)
    assert releases.values("hr") == {"image": {"repository": app, "tag": "1.1.1-rc.1"}, "replicas": 3}
    # The resourceVersion moved, so the patch was refused once and decided again from the edit.
    assert kube.rereads == 1


# --- registries that fail -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def protected_app(auth_registry: Registry) -> str:
    repository = f"team/private-{uuid.uuid4().hex[:8]}"
    pusher = ImagePusher(auth_registry)
    pusher.push(repository, "1.0.0", created=utc(30))
    pusher.push(repository, "1.0.1", created=utc(10))
    return f"{auth_registry.host}/{repository}"


@pytest.mark.parametrize(
    ("failure", "expected_in_message"),
    [
        pytest.param("down", "check that 127.0.0.1", id="registry-down"),
        pytest.param("unauthorized", "requires credentials and none match", id="unauthorized"),
        pytest.param("not-found", "HTTP 404", id="repository-not-found"),
    ],
)
async def test_a_failing_registry_is_reported_and_blocks_nobody(
    failure: str,
    expected_in_message: str,
    app: str,
    protected_app: str,
    registry: Registry,
    auth_registry: Registry,
    releases: Releases,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    down = f"127.0.0.1:{free_port()}"
    broken_image = {
        "down": f"{down}/team/app",
        "unauthorized": protected_app,
        "not-found": f"{registry.host}/team/missing-{uuid.uuid4().hex[:8]}",
    }[failure]
    releases.create("broken", {"image": {"repository": broken_image, "tag": "1.0.0"}})
    releases.create("healthy", {"image": {"repository": app, "tag": "1.0.0"}})

    report, metrics = await one_cycle(api_client, namespace, registry.host, auth_registry.host, down)

    assert releases.values("broken") == {"image": {"repository": broken_image, "tag": "1.0.0"}}
    [(kind, reason, message)] = releases.events("broken")
    assert (kind, reason) == ("Warning", "ImageScanFailed")
    assert message.startswith(f"chart-image: registry {broken_image.split('/')[0]}, repository ")
    assert expected_in_message in message
    assert releases.values("healthy")["image"]["tag"] == "1.1.1-rc.1"
    assert report.failed
    failures = metrics.get_sample_value("helmrelease_image_update_failures_total", {"cause": "registry"})
    assert failures == 1.0


async def test_a_repeated_failure_is_posted_once(
    registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    """Every cycle logs it; the Event is posted when it starts, not every interval."""
    missing = f"{registry.host}/team/missing-{uuid.uuid4().hex[:8]}"
    releases.create("hr", {"image": {"repository": missing, "tag": "1.0.0"}})
    metrics = CollectorRegistry()
    pool = RegistryPool(
        RegistryConfig(insecure_hosts=frozenset({registry.host})), RegistryMetrics.create(metrics)
    )
    service = ImagePolicyService(
        KubeClient(api_client),
        pool,
        settings=ImagePolicySettings(namespaces=(namespace,)),
        metrics=AutomationMetrics.create(metrics),
    )
    try:
        for _ in range(3):
            await service.run_cycle()
    finally:
        await pool.close()
    assert [reason for _, reason, _ in releases.events("hr")] == ["ImageScanFailed"]


# --- credentials ----------------------------------------------------------------------------------------


def dockerconfig_secret(core: k8s.CoreV1Api, namespace: str, name: str, dockerconfigjson: str) -> None:
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name),
            type="kubernetes.io/dockerconfigjson",
            data={".dockerconfigjson": base64.b64encode(dockerconfigjson.encode()).decode()},
        ),
    )


@pytest.mark.parametrize("source", ["pull-secret-annotation", "service-account", "named-service-account"])
async def test_basic_auth_registry_with_credentials_from_a_secret(
    source: str,
    protected_app: str,
    auth_registry: Registry,
    releases: Releases,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    dockerconfig_secret(core, namespace, "registry-login", auth_registry.dockerconfigjson())
    annotations = dict(AUTOMATED)
    spec: dict[str, Any] = {}
    if source == "pull-secret-annotation":
        annotations["image.helm.fluxcd.io/pull-secret"] = "registry-login"
    else:
        account = "default" if source == "service-account" else "deployer"
        pull_secrets = [
            k8s.V1LocalObjectReference(name="missing-is-skipped"),
            k8s.V1LocalObjectReference(name="registry-login"),
        ]
        if account == "default":
            core.patch_namespaced_service_account("default", namespace, {"imagePullSecrets": pull_secrets})
        else:
            core.create_namespaced_service_account(
                namespace,
                k8s.V1ServiceAccount(
                    metadata=k8s.V1ObjectMeta(name=account), image_pull_secrets=pull_secrets
                ),
            )
            spec["serviceAccountName"] = account
    releases.create("hr", {"image": {"repository": protected_app, "tag": "1.0.0"}}, annotations, **spec)

    report, _ = await one_cycle(api_client, namespace, auth_registry.host)

    assert releases.values("hr")["image"]["tag"] == "1.0.1"
    assert not report.failed


async def test_operator_level_docker_config_is_the_fallback(
    protected_app: str, auth_registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    releases.create("hr", {"image": {"repository": protected_app, "tag": "1.0.0"}})
    credentials = CredentialStore.from_docker_configs(json.loads(auth_registry.dockerconfigjson()))
    await one_cycle(api_client, namespace, auth_registry.host, credentials=credentials)
    assert releases.values("hr")["image"]["tag"] == "1.0.1"


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param('{"auths": []}', "is not usable: 'auths' is not an object", id="not-a-docker-config"),
    ],
)
async def test_an_unusable_pull_secret_is_reported_and_nothing_changes(
    secret: str | None,
    expected: str,
    protected_app: str,
    auth_registry: Registry,
    releases: Releases,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    if secret is not None:
        dockerconfig_secret(core, namespace, "registry-login", secret)
    values = {"image": {"repository": protected_app, "tag": "1.0.0"}}
    releases.create("hr", values, {**AUTOMATED, "image.helm.fluxcd.io/pull-secret": "registry-login"})
    await one_cycle(api_client, namespace, auth_registry.host)
    assert releases.values("hr") == values
    [(kind, reason, message)] = releases.events("hr")
    assert (kind, reason) == ("Warning", "ImageScanFailed")
    assert message.startswith(f"Secret {namespace}/registry-login named by image.helm.fluxcd.io/pull-secret")
    assert expected in message


# --- git write-back -------------------------------------------------------------------------------------


MANIFEST = """\
# The app, released by the operator; the sidecar may change the tag below and nothing else.
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: hr
  namespace: {namespace}
  annotations:
    fluxcd.io/automated: "true"
    fluxcd.io/tag.chart-image: semver:~1.0
    image.helm.fluxcd.io/git-writeback: "true"
spec:
  chart: {{repository: "http://charts.example.invalid/", name: app, version: 0.1.0}}
  values:
    image:
      repository: {image}   # from our registry
      tag: 1.0.0
    replicas: 1
"""


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    origin = Remote(tmp_path / "remote.git", scratch)
    origin.git("init", "--quiet", "--bare", "--initial-branch=main", str(origin.bare), cwd=tmp_path)
    return origin


def seed(remote: Remote, files: dict[str, str]) -> None:
    clone = remote.scratch / "seed"
    remote.git("clone", "--quiet", remote.url, str(clone), cwd=remote.scratch)
    for path, text in files.items():
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_text(text)
    remote.git("add", ".", cwd=clone)
    remote.git("commit", "--quiet", "-m", "seed", cwd=clone)
    remote.git("push", "--quiet", "origin", "HEAD:main", cwd=clone)


async def test_git_writeback_commits_a_one_line_diff_then_updates_the_cluster(
    app: str,
    registry: Registry,
    releases: Releases,
    remote: Remote,
    tmp_path: Path,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    manifest = MANIFEST.format(namespace=namespace, image=app)
    seed(
        remote,
        {
            "clusters/prod/app.yaml": manifest,
            "clusters/staging/app.yaml": manifest,
            "README.md": "hr 1.0.0\n",
        },
    )
    releases.create(
        "hr",
        {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1},
        {
            **AUTOMATED,
            "fluxcd.io/tag.chart-image": "semver:~1.0",
            "image.helm.fluxcd.io/git-writeback": "true",
        },
    )
    author = Author("Image Bot", "image-bot@example.com")
    git = GitWriteback(
        GitRepository(GitRemote(remote.url, "main"), tmp_path / "git-state"), author, path="clusters/prod"
    )

    await one_cycle(api_client, namespace, registry.host, git=git)

    assert remote.count() == 2
    assert remote.changed_lines() == ["-      tag: 1.0.0", "+      tag: 1.0.5"]
    assert remote.show("clusters/prod/app.yaml") == manifest.replace("tag: 1.0.0", "tag: 1.0.5")
    assert remote.show("clusters/staging/app.yaml") == manifest  # outside --git-path
    assert remote.git("log", "-1", "--format=%an <%ae>|%s").strip() == (
        f"Image Bot <image-bot@example.com>|Update image {app} to 1.0.5 in {namespace}/hr"
    )
    assert releases.values("hr")["image"]["tag"] == "1.0.5"
    reasons = [reason for _, reason, _ in releases.events("hr")]
    assert sorted(reasons) == ["ImageGitCommitted", "ImageUpdated"]


async def test_git_writeback_leaves_a_manifest_someone_changed_and_holds_the_cluster(
    app: str,
    registry: Registry,
    releases: Releases,
    remote: Remote,
    tmp_path: Path,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    """Git says 1.0.2 while the cluster says 1.0.0: in doubt, neither changes."""
    seed(
        remote,
        {"app.yaml": MANIFEST.format(namespace=namespace, image=app).replace("tag: 1.0.0", "tag: 1.0.2")},
    )
    releases.create(
        "hr",
        {"image": {"repository": app, "tag": "1.0.0"}},
        {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"},
    )
    git = GitWriteback(
        GitRepository(GitRemote(remote.url, "main"), tmp_path / "git-state"), all_releases=True
    )

    report, _ = await one_cycle(api_client, namespace, registry.host, git=git)

    assert remote.count() == 1
    assert releases.values("hr")["image"]["tag"] == "1.0.0"
    [(kind, reason, message)] = releases.events("hr")
    assert (kind, reason) == ("Warning", "ImageGitWritebackFailed")
    assert "app.yaml: chart-image: the manifest has tag 1.0.2, not 1.0.0; left as is" in message
    assert report.failed
