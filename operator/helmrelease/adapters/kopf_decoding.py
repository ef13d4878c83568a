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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from kopf._cogs.clients import api as kopf_api

from helmrelease.api import bounded_json

_INSTALLED = "_helmrelease_bounded_decoder"


async def _bounded_body(response: aiohttp.ClientResponse, **_: Any) -> Any:
    """``ClientResponse.json`` with the bounded decoder (an empty body is None, as in aiohttp)."""
    body = await response.read()
    if not body.strip():
        return None
    return bounded_json.loads(body)


def _bounded_request(original: Callable[..., Any]) -> Callable[..., Any]:
    async def request(*args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
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
        loads=bounded_json.loads, dumps=json.dumps, JSONDecodeError=json.JSONDecodeError
    )
    kopf_api.request = _bounded_request(kopf_api.request)


def installed() -> bool:
    decoder = getattr(kopf_api, "json", None)
    return (
        bool(getattr(kopf_api.request, _INSTALLED, False))
        and getattr(decoder, "loads", None) is bounded_json.loads
    )
