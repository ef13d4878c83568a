"""JSON patches (RFC 6902) that move an image tag in a HelmRelease in the cluster.

Each change is a ``test`` of the value we read followed by a ``replace``: if someone edited the same value
between our read and our write, the API server rejects the whole patch instead of us overwriting them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Literal, TypedDict

from helmrelease.images.detect import DetectedImage, ValueChange

VALUES_POINTER: Final = "/spec/values"


class JsonPatchOperation(TypedDict):
    """One RFC 6902 operation as the Kubernetes API takes it (``application/json-patch+json``)."""

    op: Literal["test", "replace", "add"]
    path: str
    value: str


def json_pointer(keys: Sequence[str], *, base: str = "") -> str:
    """RFC 6901 pointer: ``~`` is written ``~0`` and ``/`` is written ``~1`` inside each key."""
    return base + "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)


def changes_patch(
    changes: Iterable[ValueChange], *, values_pointer: str = VALUES_POINTER
) -> list[JsonPatchOperation]:
    """``test`` then ``replace`` for every change, in order, under ``values_pointer``."""
    operations: list[JsonPatchOperation] = []
    for change in changes:
        path = json_pointer(change.path, base=values_pointer)
        operations.append({"op": "test", "path": path, "value": change.old})
        operations.append({"op": "replace", "path": path, "value": change.new})
    return operations


ANNOTATIONS_POINTER: Final = "/metadata/annotations"


def annotation_operation(key: str, value: str) -> JsonPatchOperation:
    """Set one annotation (``add`` replaces a member that is there); the object must have annotations,
    which an automated HelmRelease always has."""
    return {"op": "add", "path": json_pointer((key,), base=ANNOTATIONS_POINTER), "value": value}


def image_tag_patch(
    image: DetectedImage, tag: str, *, values_pointer: str = VALUES_POINTER
) -> list[JsonPatchOperation]:
    """The patch that moves ``image`` to ``tag`` (raises ``NotAutomatableError`` like ``tag_change``)."""
    return changes_patch([image.tag_change(tag)], values_pointer=values_pointer)
