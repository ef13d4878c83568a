"""Live objects (a drift check's reads) over the wire: plain GETs, by the client's credentials and default headers,
one after the other in one worker thread.

A kmock server stands in for kube-apiserver, answering API discovery and the objects by path, so the paths, headers
and the conversion of each answer are what the production client (`api_client`, `KubeClient`) really sends and does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from helmrelease.adapters.kube import ApiUnavailable, Forbidden, KubeClient, ObjectRef, api_client

V1 = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "configmaps",
            "singularName": "configmap",
            "namespaced": True,
            "kind": "ConfigMap",
            "verbs": ["get"],
        },
        {
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": False,
            "kind": "Namespace",
            "verbs": ["get"],
        },
    ],
}
APPS = {
    "kind": "APIResourceList",
    "groupVersion": "apps/v1",
    "resources": [
        {
            "name": "deployments",
            "singularName": "deployment",
            "namespaced": True,
            "kind": "Deployment",
            "verbs": ["get"],
        }
    ],
}
DISCOVERY: dict[str, Any] = {
    "/version": {"major": "1", "minor": "37", "gitVersion": "v1.37.2"},
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {
        "kind": "APIGroupList",
        "groups": [
            {
                "name": "apps",
                "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
            }
        ],
    },
    "/api/v1": V1,
    "/apis/apps/v1": APPS,
}


def status(code: int, message: str) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


def obj(kind: str, name: str) -> dict[str, object]:
    return {"kind": kind, "metadata": {"name": name}, "data": {"k": "v"}}


#: The objects the fake API server holds, by path; any other path is a 404, except these answers.
OBJECTS: dict[str, Any] = {
    "/api/v1/namespaces/apps/configmaps/web": obj("ConfigMap", "web"),
    "/api/v1/namespaces/apps": obj("Namespace", "apps"),
    "/apis/apps/v1/namespaces/apps/deployments/web": obj("Deployment", "web"),
}
ANSWERS: dict[str, tuple[int, str]] = {
    "/api/v1/namespaces/apps/configmaps/secret-ish": (403, 'configmaps "secret-ish" is forbidden'),
    "/api/v1/namespaces/apps/configmaps/busy": (503, "the server is currently unable to handle the request"),
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[kmock.RawHandler, KubeClient]]:
    async with kmock.RawHandler() as mock, kmock.Server(mock) as running:
        for path, answer in {**OBJECTS, **DISCOVERY}.items():
            mock[f"get {path}"] << answer
        for path, (code, message) in ANSWERS.items():
            mock[f"get {path}"] << code << status(code, message)
        mock["get"] << 404 << status(404, "not found")  # anything else
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": str(running.url).rstrip("/")}}],
            "users": [{"name": "u", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        (tmp_path / "kubeconfig").write_text(json.dumps(config))
        client = KubeClient(api_client(tmp_path / "kubeconfig"))
        try:
            yield mock, client
        finally:
            client.api_client.close()


def object_requests(mock: kmock.RawHandler) -> list[Any]:
    return [request for request in mock if request.url.raw_path not in DISCOVERY]


async def test_live_objects_are_read_in_order_as_plain_gets_of_their_paths(
    server: tuple[kmock.RawHandler, KubeClient],
) -> None:
    mock, client = server
    found = await client.get_objects(
        [
            ObjectRef("v1", "ConfigMap", "apps", "web"),
            ObjectRef("apps/v1", "Deployment", "apps", "web"),
            ObjectRef("v1", "Namespace", "", "apps"),
            ObjectRef("v1", "Namespace", "ignored-for-a-cluster-scoped-kind", "apps"),
            ObjectRef("v1", "ConfigMap", "apps", "gone"),
            ObjectRef("example.com/v1", "Unknown", "apps", "web"),
            ObjectRef("v1", "ConfigMap", "apps", "../../../apis/apps/v1/namespaces/apps/deployments/web"),
        ]
    )
    assert found == [
        OBJECTS["/api/v1/namespaces/apps/configmaps/web"],
        OBJECTS["/apis/apps/v1/namespaces/apps/deployments/web"],
        OBJECTS["/api/v1/namespaces/apps"],
        OBJECTS["/api/v1/namespaces/apps"],
        None,  # not found
        None,  # a kind the API server does not serve
        None,  # a name is one path segment, whatever the (tenant-writable) manifest says
    ]
    requests = object_requests(mock)
    assert [request.url.raw_path for request in requests][-1] == (
        "/api/v1/namespaces/apps/configmaps/..%2F..%2F..%2Fapis%2Fapps%2Fv1%2Fnamespaces%2Fapps%2Fdeployments%2Fweb"
    )
    assert {request.headers.get("Authorization") for request in requests} == {"Bearer t0ken"}
    assert {request.headers.get("Accept") for request in requests} == {"application/json"}


async def test_an_impersonating_client_reads_them_as_its_service_account(
    server: tuple[kmock.RawHandler, KubeClient],
) -> None:
    mock, client = server
    tenant = client.impersonating("apps", "deployer")
    assert (
        await tenant.get_object("v1", "ConfigMap", "apps", "web")
        == OBJECTS["/api/v1/namespaces/apps/configmaps/web"]
    )
    (request,) = object_requests(mock)
    assert request.headers.get("Impersonate-User") == "system:serviceaccount:apps:deployer"
    assert request.headers.get("Authorization") == "Bearer t0ken"


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("secret-ish", Forbidden, 'ConfigMap apps/secret-ish: configmaps "secret-ish" is forbidden'),
        ("busy", ApiUnavailable, "ConfigMap apps/busy: the server is currently unable to handle the request"),
    ],
)
async def test_the_first_failure_raises_converted_once_and_naming_its_object(
    server: tuple[kmock.RawHandler, KubeClient], name: str, error: type[Exception], message: str
) -> None:
    mock, client = server
    refs = [ObjectRef("v1", "ConfigMap", "apps", name), ObjectRef("v1", "ConfigMap", "apps", "web")]
    with pytest.raises(error) as raised:
        await client.get_objects(refs)
    assert str(raised.value) == message
    paths = {request.url.raw_path for request in object_requests(mock)}
    assert paths == {f"/api/v1/namespaces/apps/configmaps/{name}"}, "the objects after it are not read"
