"""Image references: ``[registry[:port]/]repository[:tag][@algorithm:digest]``.

We keep a reference exactly as the user wrote it (so an update changes only the tag and nothing else of
their spelling) and derive a canonical name separately, for comparing references and for registry calls.

The first path component is a registry when it contains ``.`` or ``:`` or is ``localhost`` (the rule
Docker and Flux v1 use), so ``localhost:5000/app:1`` and ``myreg:5000/team/app:1`` have registries while
``team/app:1`` does not. Docker Hub spellings (none, ``docker.io``, ``index.docker.io``,
``registry-1.docker.io``, with or without ``library/``) share one canonical name whose host stays
``docker.io``: mapping that to the API endpoint is the network layer's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"", "docker.io", "index.docker.io", "registry-1.docker.io"})
_OFFICIAL_IMAGES_NAMESPACE = "library"
_MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_REGISTRY = re.compile(rf"{_HOST}(?::[0-9]+)?")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")


class ImageReferenceError(ValueError):
    """A string that is not an image reference, or a part that cannot belong to one."""


def looks_like_registry(component: str) -> bool:
    """Whether the first path component of a reference names a registry rather than a repository part."""
    return "." in component or ":" in component or component == "localhost"


def is_valid_tag(tag: str) -> bool:
    """Whether ``tag`` is a tag a registry accepts (letters, digits, ``_ . -``; at most 128 characters)."""
    return _TAG.fullmatch(tag) is not None


def check_tag(tag: str) -> str:
    """``tag`` itself, or ``ImageReferenceError`` when no registry would accept it."""
    if not is_valid_tag(tag):
        raise ImageReferenceError(
            f"{tag!r} is not a tag (letters, digits, _ . -; at most 128, no leading . or -)"
        )
    return tag


@dataclass(frozen=True)
class CanonicalName:
    """Registry host and repository path after Docker Hub normalisation: what identifies an image's tags."""

    host: str
    path: str

    def __str__(self) -> str:
        return f"{self.host}/{self.path}"


@dataclass(frozen=True)
class ImageRef:
    """A reference as written. Construction validates every part, so an ``ImageRef`` is always well formed."""

    repository: str
    registry: str | None = None
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if self.registry is not None and _REGISTRY.fullmatch(self.registry) is None:
            raise ImageReferenceError(f"{self.registry!r} is not a registry host")
        if _REPOSITORY.fullmatch(self.repository) is None:
            raise ImageReferenceError(
                f"{self.repository!r} is not a repository path "
                "(lowercase letters, digits and . _ - separators, components joined by /)"
            )
        first, _, rest = self.repository.partition("/")
        if self.registry is None and rest and looks_like_registry(first):
            raise ImageReferenceError(f"{self.repository!r} would read as registry {first!r}")
        if len(self.name) > _MAX_NAME_LENGTH:
            raise ImageReferenceError(f"image name longer than {_MAX_NAME_LENGTH} characters")
        if self.tag is not None:
            check_tag(self.tag)
        if self.digest is not None and _DIGEST.fullmatch(self.digest) is None:
            raise ImageReferenceError(f"{self.digest!r} is not a digest (algorithm:hex)")

    @property
    def name(self) -> str:
        """``[registry/]repository`` as written."""
        return f"{self.registry}/{self.repository}" if self.registry is not None else self.repository

    @property
    def canonical(self) -> CanonicalName:
        """The name that identifies the image regardless of how Docker Hub was spelled."""
        host = (self.registry or "").lower()
        if host in _DOCKER_HUB_ALIASES:
            path = self.repository
            if "/" not in path:
                path = f"{_OFFICIAL_IMAGES_NAMESPACE}/{path}"
            return CanonicalName(DOCKER_HUB, path)
        return CanonicalName(host, self.repository)

    def same_image(self, other: ImageRef) -> bool:
        """Whether both references name the same repository (tags and digests aside)."""
        return self.canonical == other.canonical

    def with_tag(self, tag: str) -> ImageRef:
        """The same reference with another tag (validated like any other)."""
        return replace(self, tag=tag)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image_ref(text: str) -> ImageRef:
    """Split ``text`` into its parts; raise ``ImageReferenceError`` when it is not a reference."""
    if not text or text != text.strip():
        raise ImageReferenceError(f"{text!r} is not an image reference (empty or surrounded by spaces)")
    remainder, at, digest = text.partition("@")
    if at and not digest:
        raise ImageReferenceError(f"{text!r} has an empty digest after '@'")
    name, tag = remainder, None
    last_colon = remainder.rfind(":")
    if last_colon > remainder.rfind("/"):
        name, tag = remainder[:last_colon], remainder[last_colon + 1 :]
    registry = None
    first, slash, rest = name.partition("/")
    if slash and looks_like_registry(first):
        registry, name = first, rest
    return ImageRef(repository=name, registry=registry, tag=tag, digest=digest or None)
