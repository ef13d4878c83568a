"""The registry adapter against a real registry (distribution) with images pushed through its own API.

Every expectation here is the registry's own answer: tag pages as distribution cuts them, build times from the
config blobs the pusher wrote, Basic auth from htpasswd. Request counts come from the adapter's metrics.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.support.registry import ImagePusher, Registry, utc

from helmrelease.adapters.registry import (
    CredentialStore,
    Platform,
    RegistryClient,
    RegistryConfig,
    RegistryMetrics,
    RegistryNotFound,
    RegistryUnauthorized,
    ScanCycle,
)
from helmrelease.adapters.registry.formats import OCI_INDEX, OCI_MANIFEST

PAGE_SIZE = 5


@dataclass(frozen=True)
class Pushed:
    """What a fixture pushed: the repository as an image name, and each tag's build time."""

    repository: str
    created: dict[str, datetime]


def _repository(registry: Registry, purpose: str) -> tuple[str, str]:
    path = f"it-{uuid.uuid4().hex[:8]}/{purpose}"
    return path, f"{registry.host}/{path}"


def _push_index(pusher: ImagePusher, path: str, tag: str, platforms: dict[tuple[str, str], str]) -> None:
    """An image index over already pushed single-platform manifests (each with its own build time)."""
    entries = []
    for (os_name, architecture), digest in platforms.items():
        manifest = pusher.session.get(
            f"{pusher.registry.url}/v2/{path}/manifests/{digest}",
            headers={"Accept": OCI_MANIFEST},
            timeout=10,
        )
        manifest.raise_for_status()
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest.content),
                "platform": {"os": os_name, "architecture": architecture},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    response = pusher.session.put(
        f"{pusher.registry.url}/v2/{path}/manifests/{tag}",
        data=index,
        headers={"Content-Type": OCI_INDEX},
        timeout=10,
    )
    response.raise_for_status()


def _push_annotated_copy(pusher: ImagePusher, path: str, tag: str, new_tag: str) -> None:
    """The same build under a new manifest (an annotation added): a new digest sharing the config blob."""
    url = f"{pusher.registry.url}/v2/{path}/manifests"
    response = pusher.session.get(f"{url}/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=10)
    response.raise_for_status()
    manifest = response.json() | {"annotations": {"org.opencontainers.image.ref.name": new_tag}}
    body = json.dumps(manifest).encode()
    put = pusher.session.put(
        f"{url}/{new_tag}", data=body, headers={"Content-Type": OCI_MANIFEST}, timeout=10
    )
    put.raise_for_status()


@pytest.fixture(scope="module")
def paged(pusher: ImagePusher, registry: Registry) -> Pushed:
    """Twelve tags (more than two pages of five), each a different build time."""
    path, name = _repository(registry, "paged")
    created = {f"1.0.{n}": utc(minutes_ago=120 - n) for n in range(12)}
    for tag, when in created.items():
        pusher.push(path, tag, created=when)
    return Pushed(name, created)


@pytest.fixture(scope="module")
def multi_arch(pusher: ImagePusher, registry: Registry) -> Pushed:
    """`multi`: an index whose amd64 and arm64 builds have different times; `amd`/`arm`: those builds alone;
    `amd-annotated`: another manifest for the `amd` build (same config blob); `pushed-multi`: the pusher's own
    two-platform index (one time for both)."""
    path, name = _repository(registry, "multi")
    created = {"amd": utc(minutes_ago=90), "arm": utc(minutes_ago=30), "pushed-multi": utc(minutes_ago=10)}
    amd = pusher.push(path, "amd", created=created["amd"], platforms=(("linux", "amd64"),))
    arm = pusher.push(path, "arm", created=created["arm"], platforms=(("linux", "arm64"),))
    _push_index(pusher, path, "multi", {("linux", "amd64"): amd, ("linux", "arm64"): arm})
    _push_annotated_copy(pusher, path, "amd", "amd-annotated")
    pusher.push(
        path,
        "pushed-multi",
        created=created["pushed-multi"],
        platforms=(("linux", "amd64"), ("linux", "arm64")),
    )
    return Pushed(name, created)


@pytest.fixture(scope="module")
def private(auth_registry: Registry) -> Pushed:
    path, name = _repository(auth_registry, "private")
    created = {"v1": utc(minutes_ago=45)}
    ImagePusher(auth_registry).push(path, "v1", created=created["v1"])
    return Pushed(name, created)


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    return CollectorRegistry()


def _client(
    *registries: Registry,
    metrics_registry: CollectorRegistry | None = None,
    credentials: CredentialStore | None = None,
    **settings: Any,
) -> RegistryClient:
    config = RegistryConfig(insecure_hosts=frozenset(r.host for r in registries), **settings)
    return RegistryClient(
        config, credentials, RegistryMetrics.create(metrics_registry or CollectorRegistry())
    )


def cache_hits(metrics_registry: CollectorRegistry, cache: str) -> float:
    labels = {"cache": cache, "result": "hit"}
    return metrics_registry.get_sample_value("helmrelease_registry_cache_lookups_total", labels) or 0.0


def requests_made(
    metrics_registry: CollectorRegistry, registry: Registry, kind: str, code: str = "200"
) -> float:
    labels = {"registry": registry.host, "kind": kind, "code": code}
    return metrics_registry.get_sample_value("helmrelease_registry_requests_total", labels) or 0.0


async def test_tags_are_listed_across_pages(
    paged: Pushed, registry: Registry, metrics_registry: CollectorRegistry
) -> None:
    async with _client(registry, metrics_registry=metrics_registry, page_size=PAGE_SIZE) as client:
        tags = await client.list_tags(paged.repository)
    assert tags == tuple(sorted(paged.created))  # distribution pages in lexical order; we keep it
    assert requests_made(metrics_registry, registry, "tags") == 3


async def test_build_times_come_from_config_blobs(paged: Pushed, registry: Registry) -> None:
    async with _client(registry) as client:
        times = await asyncio.gather(*(client.image_created(paged.repository, tag) for tag in paged.created))
    assert dict(zip(paged.created, times, strict=True)) == paged.created


@pytest.mark.parametrize(
    ("tag", "platform", "expected"),
    [
        pytest.param("multi", None, "amd", id="index-default-linux-amd64"),
        pytest.param("multi", Platform("linux", "arm64"), "arm", id="index-configured-arm64"),
        pytest.param("multi", Platform("linux", "s390x"), None, id="index-without-the-platform"),
        pytest.param("pushed-multi", None, "pushed-multi", id="pusher-index"),
        pytest.param("arm", None, "arm", id="single-platform-image-is-taken-as-is"),
    ],
)
async def test_multi_arch_images_resolve_to_the_configured_platform(
    multi_arch: Pushed, registry: Registry, tag: str, platform: Platform | None, expected: str | None
) -> None:
    settings = {"platform": platform} if platform else {}
    async with _client(registry, **settings) as client:
        created = await client.image_created(multi_arch.repository, tag)
    assert created == (multi_arch.created[expected] if expected else None)


async def test_manifests_and_config_blobs_are_fetched_once(
    multi_arch: Pushed, registry: Registry, metrics_registry: CollectorRegistry
) -> None:
    """A tag seen before costs one HEAD; an index over a seen build, or a new manifest of a seen build, costs
    its own manifest and no blob."""
    async with _client(registry, metrics_registry=metrics_registry) as client:
        for tag in ("amd", "amd", "multi", "amd-annotated"):
            assert await client.image_created(multi_arch.repository, tag) == multi_arch.created["amd"]
    assert requests_made(metrics_registry, registry, "blob") == 1
    assert (
        requests_made(metrics_registry, registry, "manifest") == 4 + 3
    )  # four HEADs; GET amd, multi, annotated
    assert cache_hits(metrics_registry, "manifest") == 2  # amd again; amd as the child of multi
    assert cache_hits(metrics_registry, "config") == 1  # amd-annotated


async def test_basic_auth_with_dockerconfigjson(private: Pushed, auth_registry: Registry) -> None:
    credentials = CredentialStore.from_docker_configs(json.loads(auth_registry.dockerconfigjson()))
    async with _client(auth_registry, credentials=credentials) as client:
        assert await client.list_tags(private.repository) == ("v1",)
        assert await client.image_created(private.repository, "v1") == private.created["v1"]


@pytest.mark.parametrize(
    "password",
    [pytest.param(None, id="no-credentials"), pytest.param("wrong", id="wrong-password")],
)
async def test_private_registry_refuses_without_valid_credentials(
    private: Pushed, auth_registry: Registry, password: str | None
) -> None:
    config = {"auths": {auth_registry.host: {"username": auth_registry.username, "password": password}}}
    credentials = CredentialStore.from_docker_configs(config) if password else None
    async with _client(auth_registry, credentials=credentials) as client:
        with pytest.raises(RegistryUnauthorized) as raised:
            await client.list_tags(private.repository)
    assert raised.value.registry == auth_registry.host
    assert "dockerconfigjson" in str(raised.value)


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        pytest.param(
            lambda client, pushed, registry: client.list_tags(
                f"{registry.host}/it-missing/{uuid.uuid4().hex[:8]}"
            ),
            "tag list: HTTP 404 .NAME_UNKNOWN",
            id="unknown-repository",
        ),
        pytest.param(
            lambda client, pushed, registry: client.image_created(pushed.repository, "no-such-tag"),
            "manifest no-such-tag: HTTP 404",
            id="unknown-tag",
        ),
    ],
)
async def test_unknown_names_are_not_found(
    paged: Pushed,
    registry: Registry,
    lookup: Callable[[RegistryClient, Pushed, Registry], Awaitable[object]],
    message: str,
) -> None:
    async with _client(registry) as client:
        with pytest.raises(RegistryNotFound, match=message) as raised:
            await lookup(client, paged, registry)
    assert raised.value.status == 404


async def test_a_scan_cycle_lists_a_repository_once(
    paged: Pushed, registry: Registry, metrics_registry: CollectorRegistry
) -> None:
    async with _client(registry, metrics_registry=metrics_registry) as client:
        cycle = ScanCycle(client)
        results = await asyncio.gather(*(cycle.list_tags(paged.repository) for _ in range(25)))
    assert set(results) == {tuple(sorted(paged.created))}
    assert requests_made(metrics_registry, registry, "tags") == 1
