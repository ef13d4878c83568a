"""The kube adapter against API server faults the real one will not produce on demand, over the wire.

A kmock server stands in for kube-apiserver: it answers with the error statuses an overloaded or broken API server
sends (429, 5xx) and the refusals it sends for bad requests, or holds a request without answering. The client under
test is the production one (`api_client` from a kubeconfig, `KubeClient`), so these tests prove the whole path: the
kubernetes client's transport, its exceptions, and the adapter's one conversion into `KubeError`s.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import kmock
import pytest

from helmrelease.adapters.kube import (
    AlreadyExists,
    ApiUnavailable,
    ClientConfigError,
    Conflict,
    Forbidden,
    Invalid,
    KubeClient,
    KubeError,
    NotFound,
    ObjectRef,
    api_client,
    event_name,
)

HELMRELEASE = "/apis/helm.fluxcd.io/v1/namespaces/apps/helmreleases/web"
#: Short deadlines, so a test of a server that never answers takes a second, not the production 10 s / 30 s.
TIMEOUT = (0.5, 0.5)
#: Seconds a test waits for the client to give up, far beyond what TIMEOUT allows (and short of forever).
BOUND = 15


def kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@dataclass
class Apiserver:
    mock: kmock.RawHandler
    client: KubeClient
    #: Set to let the requests held by `hold` go (at teardown at the latest).
    released: asyncio.Event


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[Apiserver]:
    released = asyncio.Event()
    async with kmock.RawHandler() as mock, kmock.Server(mock) as server:
        config = kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/"))
        client = KubeClient(api_client(config, request_timeout=TIMEOUT))
        try:
            yield Apiserver(mock, client, released)
        finally:
            released.set()
            await client.close()
            client.api_client.close()


def status(code: int, message: str) -> dict[str, object]:
    """A `Status` object, as kube-apiserver puts in the body of an error response."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


@pytest.mark.parametrize(
    ("code", "headers", "message", "expected"),
    [
        pytest.param(429, {}, "Too many requests, please try again later.", ApiUnavailable, id="429"),
        pytest.param(
            429,
            {"Retry-After": "0"},
            "Too many requests, please try again later.",
            ApiUnavailable,
            id="429-retry",
        ),
        pytest.param(500, {}, "etcdserver: request timed out", ApiUnavailable, id="500"),
        pytest.param(
            503, {}, "the server is currently unable to handle the request", ApiUnavailable, id="503"
        ),
        pytest.param(504, {}, "the server was unable to return a response in time", ApiUnavailable, id="504"),
        pytest.param(404, {}, 'helmreleases.helm.fluxcd.io "web" not found', NotFound, id="404"),
        pytest.param(403, {}, 'helmreleases.helm.fluxcd.io "web" is forbidden', Forbidden, id="403"),
        pytest.param(409, {}, "the object has been modified", Conflict, id="409"),
        pytest.param(422, {}, 'HelmRelease "web" is invalid: spec.chart: Required value', Invalid, id="422"),
    ],
)
async def test_an_error_status_from_the_api_server_is_converted_once(
    apiserver: Apiserver, code: int, headers: dict[str, str], message: str, expected: type[KubeError]
) -> None:
    apiserver.mock[f"get {HELMRELEASE}"] << code << kmock.headers(headers) << status(code, message)
    with pytest.raises(KubeError) as raised:
        await apiserver.client.get_helmrelease("apps", "web")
    assert type(raised.value) is expected
    assert str(raised.value) == f"HelmRelease apps/web: {message}"
    assert raised.value.status == code


async def test_an_event_whose_name_is_taken_is_already_there_and_its_name_derives_from_its_key(
    apiserver: Apiserver,
) -> None:
    events = "/api/v1/namespaces/apps/events"
    taken = {**status(409, 'events "web.x" already exists'), "reason": "AlreadyExists"}
    apiserver.mock[f"post {events}"] << 409 << taken
    ref = ObjectRef("helm.fluxcd.io/v1", "HelmRelease", "apps", "web", "uid-web")
    with pytest.raises(AlreadyExists):
        await apiserver.client.post_event(ref, "Normal", "ImageUpdated", "moved", key="uid-web/41/app/1/2")
    (request,) = list(apiserver.mock)
    assert request.data["metadata"]["name"] == event_name("web", "uid-web/41/app/1/2")
    assert event_name("web", "uid-web/41/app/1/2") == event_name("web", "uid-web/41/app/1/2")
    assert event_name("web", "uid-web/41/app/1/2") != event_name("web", "uid-web/57/app/1/2")
    assert event_name("web") != event_name("web"), "without a key every Event is new"
    assert len(event_name("a" * 253, "k")) == 253, "a long name is shortened to stay valid"
    assert ".." not in event_name("a" * 235 + "." + "b" * 17, "k"), "no empty label where it is cut"


async def test_a_conflict_on_a_create_that_is_not_a_taken_name_stays_a_conflict(apiserver: Apiserver) -> None:
    (
        apiserver.mock["post /api/v1/namespaces/apps/events"]
        << 409
        << status(409, "the object has been modified")
    )
    ref = ObjectRef("helm.fluxcd.io/v1", "HelmRelease", "apps", "web")
    with pytest.raises(Conflict) as raised:
        await apiserver.client.post_event(ref, "Normal", "ImageUpdated", "moved", key="k")
    assert type(raised.value) is Conflict


async def test_an_api_server_that_stops_answering_is_unavailable_after_the_read_timeout(
    apiserver: Apiserver,
) -> None:
    apiserver.mock[f"patch {HELMRELEASE}/status"] << (apiserver.released.wait, {})
    started = time.monotonic()
    with pytest.raises(ApiUnavailable) as raised:
        await asyncio.wait_for(
            apiserver.client.patch_helmrelease_status("apps", "web", {"phase": "x"}), BOUND
        )
    assert str(raised.value) == (
        "status of HelmRelease apps/web: the Kubernetes API server is unavailable: "
        f"no answer within {TIMEOUT[1]:g}s (the read timeout)"
    )
    assert time.monotonic() - started < 2  # a PATCH is not retried by the transport: one read timeout
    assert len(apiserver.mock) == 1


async def test_api_discovery_has_the_deadline_too(apiserver: Apiserver) -> None:
    """The dynamic client (drift checks, ownership marks) discovers the API first: that request is bounded too."""
    apiserver.mock["get"] << (apiserver.released.wait, {})
    with pytest.raises(ApiUnavailable, match=r"^API discovery: .* Read timed out"):
        await asyncio.wait_for(apiserver.client.get_object("v1", "ConfigMap", "apps", "web"), BOUND)


@pytest.fixture
def blackholed_port() -> Iterator[int]:
    """A port whose SYNs go unanswered, as for a blackholed address: a listener with a full accept queue (Linux
    drops a SYN it has no room for, rather than refusing it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = [socket.socket() for _ in range(2)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_blackholed_api_server_is_unavailable_after_the_connect_timeout(
    tmp_path: Path, blackholed_port: int
) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{blackholed_port}")
    client = KubeClient(api_client(config, request_timeout=TIMEOUT))
    started = time.monotonic()
    with pytest.raises(ApiUnavailable) as raised:
        await asyncio.wait_for(client.namespace_exists("apps"), BOUND)
    assert str(raised.value) == (
        "Namespace apps: the Kubernetes API server is unavailable: "
        f"no connection within {TIMEOUT[0]:g}s (the connect timeout)"
    )
    assert time.monotonic() - started < 2  # one attempt: a connect that timed out is not tried again


def test_no_kubeconfig_is_the_adapters_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClientConfigError, match=r"^the kubeconfig \S+/missing does not exist$"):
        api_client(tmp_path / "missing")
