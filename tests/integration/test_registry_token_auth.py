"""The image-policy loop against a registry with bearer token auth: the real registry (``auth: token``) and
a token service in the fixtures whose signing certificate the registry trusts.

The sidecar, given a dockerconfigjson Secret, answers the registry's challenge with a token for the
repository's pull scope, lists tags and moves a tag; it reuses the token across requests and cycles until
it is about to expire, then asks once for a new one; wrong or missing credentials are one clear Warning
and no move, and a corrected Secret moves the release on the next cycle.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client as k8s
from tests.integration.test_image_policy import Releases, dockerconfig_secret
from tests.integration.test_registry_faults import Loop
from tests.support import registry as registry_mod
from tests.support.registry import ImagePusher, Registry, requests_by_kind, utc
from tests.support.token_server import ISSUER, SERVICE, TokenServer

pytestmark = pytest.mark.usefixtures("crd_installed")

USERNAME = "robot"
PASSWORD = uuid.uuid4().hex
SECRET = "registry-login"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("token-server"), USERNAME, PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(workdir: Path, registry: Registry, token_server: TokenServer) -> Iterator[Registry]:
    """The session registry's images, served under token auth (the same storage, another registry)."""
    auth = registry_mod.TokenAuth(token_server.realm, SERVICE, ISSUER, token_server.root_bundle)
    served = registry_mod.start(
        workdir / f"registry-token-{uuid.uuid4().hex[:6]}", token=auth, storage=workdir / "registry" / "data"
    )
    served.username, served.password = USERNAME, PASSWORD
    yield served
    served.stop()


@pytest.fixture
def server(token_server: TokenServer) -> Iterator[TokenServer]:
    """The module's token service, its log and token lifetime fresh for each test."""
    token_server.requests.clear()
    token_server.expires_in = 300
    yield token_server
    token_server.expires_in = 300


@pytest.fixture
def repository(pusher: ImagePusher) -> str:
    repository = f"private/app-{uuid.uuid4().hex[:8]}"
    for tag, minutes in (("1.0.0", 30), ("1.0.1", 20), ("1.0.2", 10)):
        pusher.push(repository, tag, created=utc(minutes))
    return repository


@pytest.fixture
def releases(custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api, namespace: str) -> Releases:
    return Releases(custom, core, namespace)


@pytest.fixture
async def loop(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path, token_registry: Registry, server: TokenServer
) -> AsyncIterator[Loop]:
    loop = Loop(api_client, namespace, tmp_path / "state", token_registry.host, server.host)
    yield loop
    await loop.pool.close()


def annotated() -> dict[str, str]:
    return {
        "fluxcd.io/automated": "true",
        "fluxcd.io/tag.chart-image": "glob:1.0.*",
        "image.helm.fluxcd.io/pull-secret": SECRET,
    }


def running_tag(releases: Releases) -> str:
    image: str = releases.values("hr")["image"]
    return image.rpartition(":")[2]


def test_the_registry_refuses_without_a_token(token_registry: Registry, repository: str) -> None:
    """The premise: anonymous and Basic requests get the Bearer challenge, not the tags."""

    url = f"{token_registry.url}/v2/{repository}/tags/list"
    for auth in (None, (USERNAME, PASSWORD)):
        response = requests.get(url, auth=auth, timeout=10)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


async def test_a_token_lists_tags_moves_a_tag_and_is_reused_across_cycles(
    loop: Loop,
    server: TokenServer,
    token_registry: Registry,
    repository: str,
    releases: Releases,
    pusher: ImagePusher,
    core: k8s.CoreV1Api,
    namespace: str,
) -> None:
    dockerconfig_secret(core, namespace, SECRET, token_registry.dockerconfigjson())
    releases.create("hr", {"image": f"{token_registry.host}/{repository}:1.0.0"}, annotated())

    report = await loop.cycle()
    assert [move.new_tag for move in report.moves] == ["1.0.2"]
    assert running_tag(releases) == "1.0.2"
    [grant] = server.granted()  # one token for the tag list, three manifests and three config blobs
    assert (grant.username, grant.scope) == (USERNAME, f"repository:{repository}:pull")
    registry_requests = requests_by_kind(loop.metrics, token_registry.host)
    assert registry_requests["manifest"] + registry_requests["blob"] >= 6

    for _ in range(2):
        report = await loop.cycle()
        assert report.moves == ()
        assert not report.failed
    pusher.push(repository, "1.0.3", created=utc(1))
    report = await loop.cycle()
    assert [move.new_tag for move in report.moves] == ["1.0.3"]
    assert len(server.granted()) == 1  # four cycles, one token
    assert server.refused() == []
    assert [reason for _, reason, _ in releases.events("hr")] == ["ImageUpdated", "ImageUpdated"]


async def test_an_expiring_token_is_renewed_once(
    loop: Loop,
    server: TokenServer,
    token_registry: Registry,
    repository: str,
    releases: Releases,
    core: k8s.CoreV1Api,
    namespace: str,
) -> None:
    """16 s of life: the client renews 10 s early, so after 6 s the next request asks for a new one."""
    server.expires_in = 16
    dockerconfig_secret(core, namespace, SECRET, token_registry.dockerconfigjson())
    releases.create("hr", {"image": f"{token_registry.host}/{repository}:1.0.0"}, annotated())
    report = await loop.cycle()
    assert [move.new_tag for move in report.moves] == ["1.0.2"]
    [first] = server.granted()
    assert time.monotonic() - first.at < 6, "the cycle took longer than the token lived"
    await asyncio.sleep(max(0.0, first.at + 6.5 - time.monotonic()))  # its life as the client reckons it
    report = await loop.cycle()
    assert not report.failed
    assert len(server.granted()) == 2
    report = await loop.cycle()
    assert not report.failed
    assert len(server.granted()) == 2


@pytest.mark.parametrize("credentials", ["wrong-password", "none"])
async def test_wrong_credentials_are_one_clear_warning_and_no_move(
    credentials: str,
    loop: Loop,
    server: TokenServer,
    token_registry: Registry,
    repository: str,
    releases: Releases,
    core: k8s.CoreV1Api,
    namespace: str,
) -> None:
    annotations = annotated()
    if credentials == "wrong-password":
        wrong = json.loads(token_registry.dockerconfigjson())
        wrong["auths"][token_registry.host] = {"username": USERNAME, "password": "not-" + PASSWORD}
        dockerconfig_secret(core, namespace, SECRET, json.dumps(wrong))
    else:
        del annotations["image.helm.fluxcd.io/pull-secret"]
    releases.create("hr", {"image": f"{token_registry.host}/{repository}:1.0.0"}, annotations)

    for cycle in range(1, 4):
        report = await loop.cycle()
        assert report.failed
        assert report.moves == ()
        assert running_tag(releases) == "1.0.0"
        assert loop.value("helmrelease_image_update_failures_total", cause="registry") == cycle
    assert server.granted() == []
    assert [request.username for request in server.refused()] == [
        USERNAME if credentials == "wrong-password" else None
    ] * 3  # once per cycle, not once per request
    [(kind, reason, message)] = releases.events("hr")
    assert (kind, reason) == ("Warning", "ImageScanFailed")
    assert message.startswith(f"chart-image: registry {token_registry.host}, repository {repository}: ")
    assert f"token from {server.realm}: HTTP 401 (UNAUTHORIZED: authentication required)" in message
    assert (
        f"add a kubernetes.io/dockerconfigjson Secret with credentials for {token_registry.host}" in message
    )
    assert PASSWORD not in message

    # the Secret put right: the next cycle moves
    if credentials == "wrong-password":
        core.delete_namespaced_secret(SECRET, namespace)
    else:
        releases.patch("hr", {"metadata": {"annotations": annotated()}})
    dockerconfig_secret(core, namespace, SECRET, token_registry.dockerconfigjson())
    report = await loop.cycle()
    assert [move.new_tag for move in report.moves] == ["1.0.2"]
    assert len(server.granted()) == 1
