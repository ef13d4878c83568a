"""From the image model's canonical names to the Distribution API's hosts and token scopes."""

from __future__ import annotations

from helmrelease.images.reference import DOCKER_HUB, CanonicalName, ImageReferenceError, parse_image_ref

DOCKER_HUB_API_HOST = "registry-1.docker.io"


def as_canonical(repository: CanonicalName | str) -> CanonicalName:
    """Accept a canonical name, or parse ``[registry/]repository`` (no tag, no digest) into one."""
    if isinstance(repository, CanonicalName):
        return repository
    reference = parse_image_ref(repository)
    if reference.tag is not None or reference.digest is not None:
        raise ImageReferenceError(f"{repository!r}: pass the repository without its tag or digest")
    return reference.canonical


def api_host(name: CanonicalName) -> str:
    """The host serving the Distribution API: Docker Hub's is not the one people write in image names."""
    return DOCKER_HUB_API_HOST if name.host == DOCKER_HUB else name.host


def pull_scope(name: CanonicalName) -> str:
    """The token scope that lets us read ``name``'s tags, manifests and blobs."""
    return f"repository:{name.path}:pull"
