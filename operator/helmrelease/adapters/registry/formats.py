"""Registry documents (tag lists, manifests, indexes, image configs, token and error bodies) as typed values.

Pure functions over bytes: each raises ``DocumentError`` when a document lacks what the protocol promises, and
the client turns that into ``RegistryMalformedResponse`` with the registry and repository attached.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

CREATED_LABEL = "org.opencontainers.image.created"
# Reproducible builds (ko, nix, bazel, buildpacks) stamp the epoch or Go's zero time: no build time at all.
_PLACEHOLDER_CREATED_UNTIL = datetime(1970, 1, 1, tzinfo=UTC)
_DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")
_MAX_ERROR_TEXT = 300


class DocumentError(ValueError):
    """A registry document that is not JSON, or lacks a field the protocol requires."""


@dataclass(frozen=True)
class Platform:
    """An OS/architecture[/variant] an image index can hold a manifest for."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch`` or ``os/arch/variant``, as ``docker --platform`` spells it."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r} is not a platform: write os/architecture[/variant], e.g. linux/amd64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


@dataclass(frozen=True)
class Descriptor:
    """A content-addressed pointer to a manifest or blob."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None


@dataclass(frozen=True)
class ImageManifest:
    """A single-platform image: we only need its config blob."""

    config: Descriptor


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform image (OCI index or Docker manifest list)."""

    manifests: tuple[Descriptor, ...]


def is_digest(text: str) -> bool:
    """Whether ``text`` is a sha256/sha512 digest: the only ones we put into URLs or trust as cache keys."""
    match = _DIGEST.fullmatch(text)
    return match is not None and len(match.group(2)) == _DIGEST_ALGORITHMS[match.group(1)]


def digest_of(content: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``content``, as registries compute it."""
    return f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"


def verify_digest(content: bytes, digest: str) -> None:
    """Refuse content that does not hash to the digest it was fetched by: digest-keyed caches must be true."""
    if not is_digest(digest):
        raise DocumentError(f"{digest!r} is not a sha256 or sha512 digest")
    actual = digest_of(content, digest.partition(":")[0])
    if actual != digest:
        raise DocumentError(f"content fetched as {digest} hashes to {actual}")


def _json_object(body: bytes, what: str) -> Mapping[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise DocumentError(f"{what} is not JSON ({error})") from None
    if not isinstance(document, dict):
        raise DocumentError(f"{what} is JSON but not an object")
    return document


def parse_tag_page(body: bytes) -> list[str]:
    """The tags of one ``/tags/list`` page. Any string is a tag here: policy code decides which matter."""
    document = _json_object(body, "tag list")
    tags = document.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise DocumentError("tag list field 'tags' is not a list of strings")
    return tags


def _platform(value: object) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DocumentError("descriptor field 'platform' is not an object")
    os_name, architecture, variant = value.get("os"), value.get("architecture"), value.get("variant")
    if not isinstance(os_name, str) or not isinstance(architecture, str):
        raise DocumentError("descriptor platform lacks string 'os' and 'architecture'")
    return Platform(os_name, architecture, variant if isinstance(variant, str) and variant else None)


def _descriptor(value: object, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise DocumentError(f"{what} is not an object")
    media_type, digest, size = value.get("mediaType", ""), value.get("digest"), value.get("size")
    if not isinstance(media_type, str):
        raise DocumentError(f"{what} field 'mediaType' is not a string")
    if not isinstance(digest, str) or not is_digest(digest):
        raise DocumentError(f"{what} field 'digest' is not a sha256/sha512 digest: {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DocumentError(f"{what} field 'size' is not a non-negative integer")
    return Descriptor(media_type, digest, size, _platform(value.get("platform")))


def _media_type_of(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def parse_image_manifest(body: bytes, content_type: str | None) -> ImageManifest | ImageIndex:
    """An image manifest or index, told apart by ``mediaType`` (body first, then header), else by shape."""
    document = _json_object(body, "manifest")
    if document.get("schemaVersion") == 1:
        raise DocumentError(
            "Docker schema 1 manifests are not supported (the image needs a rebuild since 2017)"
        )
    declared = document.get("mediaType")
    media_type = declared if isinstance(declared, str) else _media_type_of(content_type)
    if media_type in INDEX_TYPES or (media_type not in MANIFEST_TYPES and "manifests" in document):
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise DocumentError("image index field 'manifests' is not a list")
        return ImageIndex(tuple(_descriptor(entry, "image index entry") for entry in entries))
    if "config" not in document:
        raise DocumentError(
            f"manifest of type {media_type or 'unknown'!r} has neither 'config' nor 'manifests'"
        )
    return ImageManifest(_descriptor(document["config"], "manifest field 'config'"))


def _runs_on(platform: Platform | None, wanted: Platform) -> bool:
    return platform is not None and (platform.os, platform.architecture) == (wanted.os, wanted.architecture)


def select_platform(index: ImageIndex, wanted: Platform) -> Descriptor | None:
    """The index entry for ``wanted``: exact variant first, then an entry without variant, then any variant
    (only when none was asked for). Attestations carry platform unknown/unknown and never match."""
    candidates = [entry for entry in index.manifests if _runs_on(entry.platform, wanted)]
    for acceptable in (wanted.variant, None):
        for entry in candidates:
            if entry.platform is not None and entry.platform.variant == acceptable:
                return entry
    return candidates[0] if candidates and wanted.variant is None else None


def is_image_config(descriptor: Descriptor) -> bool:
    """Whether a manifest's config is an image config (which has ``created``), not some other artifact's."""
    return descriptor.media_type in IMAGE_CONFIG_TYPES or not descriptor.media_type


def parse_created(value: object) -> datetime | None:
    """An RFC 3339 time as aware UTC datetime; None if absent, unparseable or a reproducible-build stamp."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        created = parsed.astimezone(UTC)
    except OverflowError:
        return None
    return None if created <= _PLACEHOLDER_CREATED_UNTIL else created


def created_from_config(body: bytes) -> datetime | None:
    """An image config's build time: ``created``, else the ``org.opencontainers.image.created`` label."""
    document = _json_object(body, "image config")
    created = parse_created(document.get("created"))
    if created is not None:
        return created
    container_config = document.get("config")
    labels = container_config.get("Labels") if isinstance(container_config, dict) else None
    return parse_created(labels.get(CREATED_LABEL)) if isinstance(labels, dict) else None


def parse_token(body: bytes) -> tuple[str, float | None]:
    """A token service answer: the token (``token`` or OAuth2 ``access_token``) and its lifetime (seconds)."""
    document = _json_object(body, "token response")
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise DocumentError("token response has no 'token' or 'access_token'")
    expires_in = document.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        return token, None
    return token, float(expires_in)


def describe_error_body(body: bytes) -> str | None:
    """The ``errors`` of an OCI error body as ``CODE: message; ...`` (bounded), or None if it is not one."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return None
    parts = [
        ": ".join(str(error[key]) for key in ("code", "message") if error.get(key))
        for error in errors
        if isinstance(error, dict)
    ]
    text = "; ".join(part for part in parts if part)
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 1] + "…"
    return text or None
