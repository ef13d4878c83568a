"""Make kopf decode API responses with the bounded JSON decoder, so no object can kill its watches.

An adapter of kopf's own HTTP client to the API server (it replaces how that client decodes what it reads), so it
lives with the other adapters, the only layer that touches aiohttp.

kopf decodes every watch event with ``json.loads`` and every other response with aiohttp's ``response.json()``.
A HelmRelease nested ~1,000 levels deep (kube-apiserver stores up to 10,000) makes ``json.loads`` raise
``RecursionError``: the watcher dies, the process exits, and the restarted operator dies again on the initial list.
Objects a few hundred levels deep pass ``json.loads`` but break kopf's recursive ``copy.deepcopy`` before any
handler runs. kopf has no setting for its decoder, so ``install`` replaces the two places it looks up at call time
(``kopf._cogs.clients.api.json`` for watch streams, ``kopf._cogs.clients.api.request`` for the responses that
``get``, ``post``, ``patch`` and ``delete`` decode) with the bounded decoder, which gives kopf the same objects
within ``DOCUMENT_DEPTH_MAX`` levels and cuts deeper subtrees, keeping metadata intact. The parse then refuses the
values with ``ValuesTooDeep``. ``tests/unit/adapters/test_kopf_decoding.py`` fails if a kopf upgrade moves these.

The same two places drop ``metadata.managedFields`` from every object kopf reads (a watch event's, a list's items,
a single object). kopf keeps the last body of every object that has a timer, and the managed fields were more than
half of a HelmRelease's (13 of 22 KiB as Python objects): at 1000 releases, 13 MiB held for nothing. Neither kopf
nor the reconciler reads them (the image-policy sidecar does, through its own client, untouched by this).

kopf's lists and watches of Secrets and ConfigMaps ask for their metadata only (``PartialObjectMetadata``, as
client-go's metadata informers do). Their handlers read names and labels: the index of Helm's storage by its labels,
the values sources by name (the reconciler reads a values source's data itself when it changed). In full, every
Secret of the cluster came in with its data: each Helm release Secret (the gzipped release, chart and manifest
included) twice per install, every tenant's credentials held in this process for a moment, and the API server
encoding all of it for a watch that needed none of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from kopf._cogs.clients import api as kopf_api

from helmrelease.api import bounded_json

_INSTALLED = "_helmrelease_bounded_decoder"
#: What the API server sends instead of whole objects: a watch's events each hold a PartialObjectMetadata, a list is a
#: PartialObjectMetadataList (it answers 406 to the other), JSON as every response kopf decodes.
_METADATA_ONLY = "application/json;as={};g=meta.k8s.io;v=v1,application/json"
WATCH_METADATA_ONLY = _METADATA_ONLY.format("PartialObjectMetadata")
LIST_METADATA_ONLY = _METADATA_ONLY.format("PartialObjectMetadataList")
#: Collections of core objects whose handlers read metadata only (any namespace, any query: a list or a watch); a
#: server prefix (an API proxy's path) may come before ``/api``.
_METADATA_COLLECTION = re.compile(r"/api/v1/(?:namespaces/[^/?]+/)?(?:secrets|configmaps)(?:\?|$)")
_WATCH = re.compile(r"[?&]watch=(?:true|1)(?:&|$)")


def metadata_only_accept(method: str, url: str) -> str | None:
    """The Accept header for kopf's list or watch of Secrets or ConfigMaps (of one namespace or all); None for any
    other request (kopf's default, whole objects)."""
    if method.lower() != "get" or _METADATA_COLLECTION.search(url) is None:
        return None
    return WATCH_METADATA_ONLY if _WATCH.search(url) else LIST_METADATA_ONLY


def without_managed_fields(document: Any) -> Any:
    """`document` (an object, a watch event or a list) without its objects' ``metadata.managedFields``."""
    if not isinstance(document, dict):
        return document
    objects: list[Any] = [document, document.get("object")]
    items = document.get("items")
    if isinstance(items, list):
        objects.extend(items)
    for obj in objects:
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)
    return document


def with_items(document: Any) -> Any:
    """A metadata-only list with no items says ``"items": null`` (a Go nil slice); kopf iterates a list's items."""
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind == "PartialObjectMetadataList" and document.get("items") is None:
        document["items"] = []
    return document


def _lean_loads(data: str | bytes) -> Any:
    return with_items(without_managed_fields(bounded_json.loads(data)))


async def _bounded_body(response: aiohttp.ClientResponse, **_: Any) -> Any:
    """``ClientResponse.json`` with the bounded decoder (an empty body is None, as in aiohttp)."""
    body = await response.read()
    if not body.strip():
        return None
    return _lean_loads(body)


def _bounded_request(original: Callable[..., Any]) -> Callable[..., Any]:
    async def request(*args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        method = kwargs.get("method", args[0] if args else "")
        url = kwargs.get("url", args[1] if len(args) > 1 else "")
        accept = metadata_only_accept(str(method), str(url))
        if accept is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Accept": accept}
        response: aiohttp.ClientResponse = await original(*args, **kwargs)

        async def decode(**options: Any) -> Any:
            return await _bounded_body(response, **options)

        response.json = decode  # type: ignore[method-assign]
        return response

    setattr(request, _INSTALLED, True)
    request.__wrapped__ = original  # type: ignore[attr-defined]
    return request


def install() -> None:
    """Idempotent; call before ``kopf.operator`` starts its watches."""
    if getattr(kopf_api.request, _INSTALLED, False):
        return
    kopf_api.json = SimpleNamespace(  # type: ignore[assignment,attr-defined]
        loads=_lean_loads, dumps=json.dumps, JSONDecodeError=json.JSONDecodeError
    )
    kopf_api.request = _bounded_request(kopf_api.request)


def installed() -> bool:
    decoder = getattr(kopf_api, "json", None)
    return (
        bool(getattr(kopf_api.request, _INSTALLED, False)) and getattr(decoder, "loads", None) is _lean_loads
    )
