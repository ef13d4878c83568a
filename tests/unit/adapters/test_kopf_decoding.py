"""kopf's own API client, with the bounded decoder installed: deep objects decode, the patch points still exist.

These tests drive kopf's real `api.get`, `api.patch` and `api.stream` against a local HTTP server, so a kopf upgrade
that moves the decoding elsewhere fails here rather than in a cluster.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from aiohttp import web
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import auth
from kopf._cogs.structs import credentials

from helmrelease.adapters import kopf_decoding
from helmrelease.api import bounded_json
from helmrelease.api.limits import DOCUMENT_DEPTH_MAX, TOO_DEEP, VALUES_DEPTH_MAX

LEVELS = 10_000
log = logging.getLogger(__name__)


def deep_object(name: str) -> bytes:
    text = json.dumps(
        {
            "apiVersion": "helm.fluxcd.io/v1",
            "kind": "HelmRelease",
            "metadata": {
                "name": name,
                "namespace": "apps",
                "resourceVersion": "7",
                "finalizers": ["f"],
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"values": {"x": "HERE"}},
        }
    )
    return text.replace('"HERE"', "[" * LEVELS + "1" + "]" * LEVELS).encode()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def one(_: web.Request) -> web.Response:
        return web.Response(body=deep_object("one"), content_type="application/json")

    async def watch(_: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(_)
        for name in ("first", "second"):
            line = b'{"type": "ADDED", "object": ' + deep_object(name) + b"}\n"
            await response.write(line)
        await response.write_eof()
        return response

    async def listing(_: web.Request) -> web.Response:
        body = (
            b'{"kind": "HelmReleaseList", "items": [' + deep_object("first") + b", " + deep_object("second")
        )
        return web.Response(body=body + b"]}", content_type="application/json")

    async def accepted(request: web.Request) -> web.Response:
        """A list that names what the client asked to be sent (the watch of Helm's storage, say)."""
        item = {"metadata": {"name": request.headers.get("Accept", ""), "namespace": "apps"}}
        return web.json_response({"kind": "List", "metadata": {"resourceVersion": "1"}, "items": [item]})

    app = web.Application()
    app.router.add_get("/api/v1/secrets", accepted)
    app.router.add_get("/api/v1/namespaces/apps/configmaps", accepted)
    app.router.add_get("/apis/helm.fluxcd.io/v1/helmreleases", accepted)
    app.router.add_get("/one", one)
    app.router.add_get("/list", listing)
    app.router.add_patch("/one", one)
    app.router.add_get("/watch", watch)
    runner = web.AppRunner(app)
    await runner.setup()  # port 0: the kernel picks a free one
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def kopf_context(server: str) -> AsyncIterator[kopf.OperatorSettings]:
    vault = credentials.Vault()
    await vault.populate({"test": credentials.ConnectionInfo(server=server)})
    token = auth.vault_var.set(vault)
    kopf_decoding.install()
    yield kopf.OperatorSettings()
    await vault.close()
    auth.vault_var.reset(token)


def check(body: Any, name: str) -> None:
    # managedFields dropped: kopf keeps each timed object's last body, and nothing reads them.
    assert body["metadata"] == {
        "name": name,
        "namespace": "apps",
        "resourceVersion": "7",
        "finalizers": ["f"],
    }
    assert bounded_json.depth_of(body) <= DOCUMENT_DEPTH_MAX
    assert bounded_json.depth_of(body["spec"]["values"]) > VALUES_DEPTH_MAX
    assert TOO_DEEP in json.dumps(body)


async def test_kopf_get_and_patch_decode_a_10000_deep_object(kopf_context: kopf.OperatorSettings) -> None:
    check(await kopf_api.get("/one", settings=kopf_context, logger=log), "one")
    check(await kopf_api.patch("/one", payload={}, settings=kopf_context, logger=log), "one")


async def test_kopf_list_decodes_every_item_without_its_managed_fields(
    kopf_context: kopf.OperatorSettings,
) -> None:
    listing = await kopf_api.get("/list", settings=kopf_context, logger=log)
    assert [item["metadata"]["name"] for item in listing["items"]] == ["first", "second"]
    for item in listing["items"]:
        check(item, item["metadata"]["name"])


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "text",
        {"metadata": "not a mapping"},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410}},
        {"items": ["not an object", {"metadata": None}]},
    ],
)
def test_documents_without_managed_fields_come_back_unchanged(document: Any) -> None:
    before = json.dumps(document)
    assert json.dumps(kopf_decoding.without_managed_fields(document)) == before


def test_only_managed_fields_are_dropped_from_an_event() -> None:
    event = {
        "type": "MODIFIED",
        "object": {"metadata": {"name": "a", "managedFields": [{}], "labels": {"x": "1"}}},
    }
    assert kopf_decoding.without_managed_fields(event) == {
        "type": "MODIFIED",
        "object": {"metadata": {"name": "a", "labels": {"x": "1"}}},
    }


async def test_kopf_watch_stream_decodes_every_deep_event(kopf_context: kopf.OperatorSettings) -> None:
    events = [event async for event in kopf_api.stream("/watch", settings=kopf_context, logger=log)]
    assert [event["object"]["metadata"]["name"] for event in events] == ["first", "second"]
    for event in events:
        check(event["object"], event["object"]["metadata"]["name"])


LIST, WATCH = kopf_decoding.LIST_METADATA_ONLY, kopf_decoding.WATCH_METADATA_ONLY


@pytest.mark.parametrize(
    ("method", "url", "accept"),
    [
        ("get", "/api/v1/secrets", LIST),
        ("GET", "/api/v1/secrets?watch=true&resourceVersion=5&allowWatchBookmarks=true", WATCH),
        ("get", "/api/v1/namespaces/apps/secrets?resourceVersion=5&watch=true", WATCH),
        ("get", "/api/v1/namespaces/apps/secrets?labelSelector=owner%3Dhelm", LIST),
        ("get", "/api/v1/namespaces/apps/configmaps?watch=false", LIST),
        ("get", "https://proxy.example/k8s/clusters/c-1/api/v1/configmaps?watch=1", WATCH),
        ("get", "/api/v1/namespaces/apps/secrets/values", None),  # one object: whole
        ("patch", "/api/v1/namespaces/apps/secrets", None),
        ("get", "/api/v1/namespaces/secrets/pods", None),  # a namespace named "secrets"
        ("get", "/api/v1/serviceaccounts", None),
        ("get", "/apis/helm.fluxcd.io/v1/helmreleases?watch=true", None),
        ("get", "/apis/example.com/v1/secrets", None),  # not the core kind
    ],
)
def test_only_lists_and_watches_of_secrets_and_config_maps_ask_for_metadata_only(
    method: str, url: str, accept: str | None
) -> None:
    assert kopf_decoding.metadata_only_accept(method, url) == accept


@pytest.mark.parametrize(
    ("url", "accept"),
    [
        ("/api/v1/secrets?watch=false", LIST),
        ("/api/v1/namespaces/apps/configmaps", LIST),
        ("/apis/helm.fluxcd.io/v1/helmreleases", "*/*"),  # as kopf asks: whole objects
    ],
)
async def test_kopf_lists_ask_for_what_their_handlers_read(
    kopf_context: kopf.OperatorSettings, url: str, accept: str
) -> None:
    listing = await kopf_api.get(url, settings=kopf_context, logger=log)
    assert listing["items"][0]["metadata"]["name"] == accept


@pytest.mark.parametrize(
    ("document", "items"),
    [
        ({"kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "9"}, "items": None}, []),
        ({"kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "9"}}, []),
        (
            {"kind": "PartialObjectMetadataList", "items": [{"metadata": {"name": "a"}}]},
            [{"metadata": {"name": "a"}}],
        ),
        ({"kind": "SecretList", "items": None}, None),  # not ours to change
    ],
)
def test_an_empty_metadata_only_list_has_items_for_kopf(document: Any, items: Any) -> None:
    assert kopf_decoding.with_items(document).get("items") == items


def test_install_is_idempotent_and_visible() -> None:
    kopf_decoding.install()
    request = kopf_api.request
    kopf_decoding.install()
    assert kopf_api.request is request
    assert kopf_decoding.installed()


@pytest.mark.parametrize(
    ("function", "needle"),
    [
        (kopf_api.get, "response.json()"),
        (kopf_api.post, "response.json()"),
        (kopf_api.patch, "response.json()"),
        (kopf_api.delete, "response.json()"),
        (kopf_api.stream, "json.loads("),
    ],
)
def test_kopf_still_decodes_where_the_guard_hooks_in(function: Any, needle: str) -> None:
    # If this fails after a kopf upgrade, move kopf_decoding.install to wherever kopf now decodes.
    source = inspect.getsource(function)
    assert needle in source
    assert "await request(" in source
