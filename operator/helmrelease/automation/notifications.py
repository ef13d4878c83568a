"""What a registry's push notification says was pushed: pure parsers, one per sender, bytes in, images out.

A notification is only ever a hint: it names repositories (and tags) to rescan now, and the rescan asks the
registry itself which tags exist, so a forged or garbled notification can at worst cause one early scan, never
a tag that is not in the registry. Each parser returns the pushed images it understood (none for events that
are not pushes: pulls, deletes, blob uploads, a ping) and raises ``PayloadError`` for a body that is not the
sender's format at all (the webhook answers 400). Single events that do not make sense are skipped, not fatal:
the Distribution registry retries a refused envelope forever, and one odd event must not hold up the others.

Formats, as documented by each sender (recorded samples under tests/fixtures/webhooks/):

- ``distribution``: the registry's ``notifications.endpoints`` envelope (media type
  ``application/vnd.docker.distribution.events.v2+json``): ``events[]`` with ``action: push``, and a tag push
  has ``target.tag``; the host is the one in ``target.url`` (the name clients used, or ``http.host``), else
  ``request.host``.
- ``dockerhub``: ``repository.repo_name`` and ``push_data.tag``, on Docker Hub.
- ``harbor``: ``type: PUSH_ARTIFACT`` and ``event_data.resources[].resource_url`` (``host/project/repo:tag``);
  in the CloudEvents payload format, ``type: harbor.artifact.pushed`` and ``data.resources[]``.
- ``ghcr``: GitHub's ``package`` (or legacy ``registry_package``) event, ``action`` ``published``/``updated``, a
  container package; ``package_version.package_url`` is ``ghcr.io/owner/name:tag``.
- ``quay``: a repository push notification: ``docker_url`` and ``updated_tags`` (a list, or a map in older
  Quay versions).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from helmrelease.images.reference import (
    DOCKER_HUB,
    CanonicalName,
    ImageRef,
    ImageReferenceError,
    is_valid_tag,
    parse_image_ref,
)

#: Images one notification may name; more is not a push any registry sends, and would make one request costly.
MAX_IMAGES: Final = 256
GHCR_HOST: Final = "ghcr.io"


class Sender(StrEnum):
    """The registries (and registry-hosting services) whose push notifications the sidecar understands."""

    DISTRIBUTION = "distribution"
    DOCKERHUB = "dockerhub"
    HARBOR = "harbor"
    GHCR = "ghcr"
    QUAY = "quay"


class PayloadError(ValueError):
    """The body is not the sender's notification format (the webhook answers 400 with this message)."""


@dataclass(frozen=True)
class Pushed:
    """One image a notification says was pushed; ``tag`` is None when it did not say which tag."""

    name: CanonicalName
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else str(self.name)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{what} is not a JSON object")
    return value


def _optional_object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _tag(value: object) -> str | None:
    text = _text(value)
    return text if text is not None and is_valid_tag(text) else None


def _name(host: str | None, repository: str | None) -> CanonicalName | None:
    if host is None or repository is None:
        return None
    try:
        return ImageRef(repository=repository, registry=host).canonical
    except ImageReferenceError:
        return None


def _reference(text: str | None) -> Pushed | None:
    """``host/path[:tag]`` as a pushed image; None unless it names a registry host."""
    if text is None:
        return None
    try:
        ref = parse_image_ref(text.rstrip(":"))
    except ImageReferenceError:
        return None
    if ref.registry is None:
        return None
    return Pushed(ref.canonical, ref.tag)


def _distribution(document: Mapping[str, Any], event: str | None) -> list[Pushed]:
    events = document.get("events", [])
    if not isinstance(events, list):
        raise PayloadError("events is not a list")
    pushed = []
    for item in events:
        entry = _optional_object(item)
        target = _optional_object(entry.get("target"))
        tag = _tag(target.get("tag"))
        if entry.get("action") != "push" or tag is None:
            continue  # pulls, deletes, blobs and manifests pushed by digest move no tag
        url = _text(target.get("url"))
        host = urlsplit(url).netloc.lower() if url else None
        name = _name(
            host or _text(_optional_object(entry.get("request")).get("host")), _text(target.get("repository"))
        )
        if name is not None:
            pushed.append(Pushed(name, tag))
    return pushed


def _dockerhub(document: Mapping[str, Any], event: str | None) -> list[Pushed]:
    repository = _object(document.get("repository"), "repository")
    name = _name(DOCKER_HUB, _text(repository.get("repo_name")))
    if name is None:
        raise PayloadError("repository.repo_name is not a Docker Hub repository")
    return [Pushed(name, _tag(_optional_object(document.get("push_data")).get("tag")))]


def _harbor(document: Mapping[str, Any], event: str | None) -> list[Pushed]:
    kind = document.get("type")
    if not isinstance(kind, str):
        raise PayloadError("type is missing")
    cloud_event = "specversion" in document
    if kind != ("harbor.artifact.pushed" if cloud_event else "PUSH_ARTIFACT"):
        return []
    key = "data" if cloud_event else "event_data"
    data = _object(document.get(key), key)
    resources = data.get("resources")
    if not isinstance(resources, list):
        raise PayloadError(f"{key}.resources is not a list")
    found = (_reference(_text(_optional_object(item).get("resource_url"))) for item in resources)
    return [pushed for pushed in found if pushed is not None]


_GITHUB_EVENTS: Final = frozenset({"package", "registry_package"})
_GITHUB_ACTIONS: Final = frozenset({"published", "updated"})
_CONTAINER_KINDS: Final = frozenset({"container", "docker"})


def _ghcr(document: Mapping[str, Any], event: str | None) -> list[Pushed]:
    if event not in _GITHUB_EVENTS:
        return []  # a ping, or an event the webhook was subscribed to by mistake
    package = _object(document.get(event), event)
    if document.get("action") not in _GITHUB_ACTIONS:
        return []
    kinds = {str(package.get(key, "")).lower() for key in ("package_type", "ecosystem")}
    if not kinds & _CONTAINER_KINDS:
        return []  # npm, maven, ...
    version = _optional_object(package.get("package_version"))
    tag = _tag(_optional_object(_optional_object(version.get("container_metadata")).get("tag")).get("name"))
    url = _text(version.get("package_url"))
    pushed = _reference(url.lower()) if url else None
    if pushed is None:
        owner = _text(_optional_object(package.get("owner")).get("login"))
        package_name = _text(package.get("name"))
        name = _name(GHCR_HOST, f"{owner}/{package_name}".lower() if owner and package_name else None)
        if name is None:
            raise PayloadError(f"{event} names no container image (package_version.package_url, owner, name)")
        pushed = Pushed(name)
    return [Pushed(pushed.name, tag or pushed.tag)]


def _quay(document: Mapping[str, Any], event: str | None) -> list[Pushed]:
    pushed = _reference(_text(document.get("docker_url")))
    if pushed is None:
        raise PayloadError("docker_url is not an image repository")
    tags: object = document.get("updated_tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list | Mapping):
        raise PayloadError("updated_tags is neither a list nor an object")
    named = [tag for tag in (_tag(tag) for tag in tags) if tag is not None]
    return [Pushed(pushed.name, tag) for tag in named] or [pushed]


_PARSERS: Final[Mapping[Sender, Callable[[Mapping[str, Any], str | None], list[Pushed]]]] = {
    Sender.DISTRIBUTION: _distribution,
    Sender.DOCKERHUB: _dockerhub,
    Sender.HARBOR: _harbor,
    Sender.GHCR: _ghcr,
    Sender.QUAY: _quay,
}


def _order(item: Pushed) -> tuple[str, str]:
    return str(item.name), item.tag or ""


def parse_notification(sender: Sender, body: bytes, *, event: str | None = None) -> tuple[Pushed, ...]:
    """The images ``body`` says were pushed, sorted and without repeats; ``event`` is GitHub's
    ``X-GitHub-Event``. Raises ``PayloadError`` when the body is not ``sender``'s format."""
    # Plain json.loads, not api.bounded_json: a deep document is refused here, not kept (the parsers read fixed
    # paths, never recursively), and the C decoder gives up on one within a millisecond, where the bounded
    # decoder would build it for about a second per MiB on the event loop.
    try:
        document = json.loads(body)
    except RecursionError:
        raise PayloadError("the body nests too deep to be any sender's notification") from None
    except ValueError as error:  # UnicodeDecodeError included
        raise PayloadError(f"the body is not JSON: {error}") from None
    pushed = sorted(set(_PARSERS[sender](_object(document, "the body"), event)), key=_order)
    if len(pushed) > MAX_IMAGES:
        raise PayloadError(f"the notification names {len(pushed)} images, more than {MAX_IMAGES}")
    return tuple(pushed)


def pushed_names(pushed: Iterable[Pushed]) -> frozenset[CanonicalName]:
    """The repositories to rescan."""
    return frozenset(item.name for item in pushed)
