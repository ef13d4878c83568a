"""Choosing the cluster client (an explicit kubeconfig, else the pod's service account, else the default file),
and what the client's failures become."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config, kube_config

from helmrelease.adapters import kube
from helmrelease.adapters.kube import ApiUnavailable, KubeClient, KubeError, NotFound, api_client
from helmrelease.adapters.kube import Forbidden as KubeForbidden

IN_CLUSTER = "https://10.0.0.1:443"
DEFAULT_FILE = "https://default.example:6443"
GIVEN_FILE = "https://given.example:6443"


def kubeconfig(path: Path, server: str) -> Path:
    cluster = {"name": "c", "cluster": {"server": server}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def default_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBECONFIG as the kubernetes package read it at import, pointing at a file of ours."""
    path = kubeconfig(tmp_path / "default", DEFAULT_FILE)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, in_cluster: bool) -> None:
    """The service account files and address a Pod has, or none of them."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    if in_cluster:
        token.write_text("service-account-token")
        ca.write_text("CA")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.mark.usefixtures("default_kubeconfig")
@pytest.mark.parametrize(
    ("in_cluster", "given", "host"),
    [
        pytest.param(True, True, GIVEN_FILE, id="given-kubeconfig-wins-in-a-pod"),
        pytest.param(False, True, GIVEN_FILE, id="given-kubeconfig"),
        pytest.param(True, False, IN_CLUSTER, id="service-account-in-a-pod"),
        pytest.param(False, False, DEFAULT_FILE, id="default-kubeconfig-outside-a-pod"),
    ],
)
def test_client_source_and_global_default_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_cluster: bool, given: bool, host: str
) -> None:
    pod(tmp_path, monkeypatch, in_cluster=in_cluster)
    default_host = k8s.Configuration.get_default_copy().host
    client = api_client(kubeconfig(tmp_path / "given", GIVEN_FILE) if given else None)
    assert client.configuration.host == host
    assert k8s.Configuration.get_default_copy().host == default_host


# ---------------------------------------------------------------------------------------------------------------
# Failures of the API come out of the adapter as KubeErrors, an unreachable server as ApiUnavailable.


def unreachable_client(port: int) -> KubeClient:
    configuration = k8s.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.verify_ssl = False
    configuration.retries = 0
    return KubeClient(k8s.ApiClient(configuration))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_is_the_api_server_unavailable() -> None:
    """The real client against a port nobody listens on: the transport's own error must not escape."""
    port = closed_port()
    with pytest.raises(ApiUnavailable) as raised:
        await unreachable_client(port).namespace_exists("apps")
    assert str(raised.value) == (
        f"Namespace apps: the Kubernetes API server is unavailable: cannot connect to 127.0.0.1:{port}: "
        "Connection refused"
    )


async def test_a_connection_dropped_mid_request_is_the_api_server_unavailable() -> None:
    """A server that accepts and hangs up (an apiserver restarting, a proxy cut)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def hang_up() -> None:
            connection, _ = server.accept()
            connection.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        with pytest.raises(ApiUnavailable, match="the Kubernetes API server is unavailable"):
            await unreachable_client(port).get_helmrelease("apps", "web")
        thread.join()


class HangingUpServer:
    """A plain-HTTP API server that answers the first request on each connection with ``{}`` and keeps the
    connection open, and hangs up without an answer on any later request on it: what a client meets when it reuses
    a connection the server has just closed as idle. With `answer_none`, it hangs up on every request."""

    def __init__(self, *, answer_none: bool = False) -> None:
        self.answer_none = answer_none
        self.connections = 0
        self.requests = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = False
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                if answered or self.answer_none:
                    return
                body = b"{}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                answered = True
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[KubeClient]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        configuration = k8s.Configuration()
        configuration.host = f"http://127.0.0.1:{port}"
        client = KubeClient(k8s.ApiClient(configuration))
        try:
            async with server:
                yield client
        finally:
            await client.close()


@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_a_request_hung_up_on_is_sent_once_more_on_a_new_connection(method: str) -> None:
    server = HangingUpServer()
    async with server.running() as client:
        for _ in range(2):  # the second goes out on the pooled connection, and is hung up on
            assert await client._send(
                method, "/api/v1/namespaces/apps", body={} if method == "PATCH" else None
            )
    assert (server.connections, server.requests) == (2, 3)


@pytest.mark.parametrize(("method", "sent"), [("GET", 2), ("PATCH", 2), ("POST", 1)])
async def test_a_server_that_hangs_up_on_every_request_is_unavailable(method: str, sent: int) -> None:
    """Twice at most, and a POST (an Event, a Lease) once: sent twice, it could be created twice."""
    server = HangingUpServer(answer_none=True)
    async with server.running() as client:
        with pytest.raises(ApiUnavailable) as raised:
            await client._request("Namespace apps", method, "/api/v1/namespaces/apps", body={"a": 1})
    assert str(raised.value) == (
        "Namespace apps: the Kubernetes API server is unavailable: "
        "the server closed the connection without an answer"
    )
    assert (server.connections, server.requests) == (sent, sent)


def pool_error(error: Exception) -> Exception:
    return urllib3.exceptions.MaxRetryError(urllib3.HTTPSConnectionPool("127.0.0.1", 1), "/api", error)


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        pytest.param(
            pool_error(urllib3.exceptions.NewConnectionError(None, "Failed to resolve 'api.example'")),
            ApiUnavailable,
            "Failed to resolve 'api.example'",
            id="dns",
        ),
        pytest.param(
            urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
            ApiUnavailable,
            "the Kubernetes API server is unavailable: Connection aborted. ([Errno 104] reset)",
            id="reset-mid-response",
        ),
        pytest.param(
            urllib3.exceptions.ReadTimeoutError(
                urllib3.HTTPSConnectionPool("127.0.0.1", 1), "/api", "Read timed out. (read timeout=5)"
            ),
            ApiUnavailable,
            "Read timed out. (read timeout=5)",
            id="read-timeout",
        ),
        pytest.param(
            ConnectionResetError(104, "Connection reset by peer"), ApiUnavailable, "reset", id="oserror"
        ),
        pytest.param(
            ApiException(status=503, reason="Service Unavailable"), ApiUnavailable, "Unavailable", id="503"
        ),
        pytest.param(
            ApiException(status=429, reason="Too Many Requests"), ApiUnavailable, "Too Many", id="429"
        ),
        pytest.param(ApiException(status=404, reason="Not Found"), NotFound, "Not Found", id="404"),
        pytest.param(ApiException(status=403, reason="Forbidden"), KubeForbidden, "Forbidden", id="403"),
    ],
)
async def test_every_failure_of_a_call_is_converted_once(
    raised: Exception, expected: type[KubeError], message: str
) -> None:
    def call() -> None:
        raise raised

    client = unreachable_client(1)
    with pytest.raises(expected) as caught:
        await client._call("HelmRelease apps/web", call)
    assert type(caught.value) is expected
    assert str(caught.value).startswith("HelmRelease apps/web: ")
    assert message in str(caught.value)


def test_impersonating_clients_are_separate_and_kept_per_account(tmp_path: Path) -> None:
    operator = KubeClient(api_client(kubeconfig(tmp_path / "given", GIVEN_FILE)))
    tenant = operator.impersonating("team-a", "deployer")
    assert tenant.api_client.default_headers["Impersonate-User"] == "system:serviceaccount:team-a:deployer"
    assert "Impersonate-User" not in operator.api_client.default_headers  # the shared client is never changed
    assert tenant.api_client.configuration is operator.api_client.configuration
    assert (operator.identity, tenant.identity) == (None, "ServiceAccount team-a/deployer")
    assert operator.impersonating("team-a", "deployer") is tenant
    assert tenant.impersonating("team-b", "x") is operator.impersonating("team-b", "x")  # never stacked
    assert operator.impersonating("team-b", "x").api_client.default_headers["Impersonate-User"] == (
        "system:serviceaccount:team-b:x"
    )


def test_impersonating_clients_are_bounded_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "IMPERSONATED_CLIENTS", 2)
    operator = KubeClient(api_client(kubeconfig(tmp_path / "given", GIVEN_FILE)))
    first, second = operator.impersonating("a", "one"), operator.impersonating("a", "two")
    assert operator.impersonating("a", "one") is first  # used again: now the most recent
    operator.impersonating("a", "three")
    assert operator.impersonating("a", "one") is first
    assert operator.impersonating("a", "two") is not second
