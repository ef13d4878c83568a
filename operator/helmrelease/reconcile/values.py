"""Compose the values Helm receives from the layers a HelmRelease names, merged as Flux v1 and Helm do.

Layers are applied in order, each on top of the previous: the deprecated ``valueFileSecrets``, then every
``valuesFrom`` source, then the inline ``values``. Maps merge key by key at every depth; anything else (lists,
strings, numbers, ``null``) replaces what was there, so a list is never concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from helmrelease.api.bounded_json import depth_of
from helmrelease.api.constants import Reason
from helmrelease.api.limits import VALUES_DEPTH_MAX
from helmrelease.api.spec import too_deep_message


class ValuesError(ValueError):
    """A values source holds something other than a map; ``source`` names it for the condition and Event."""

    reason = Reason.VALUES_ERROR

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True)
class ValuesLayer:
    """One parsed source of values and a name a person recognises (``Secret app-values key values.yaml``)."""

    source: str
    values: object


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` on top of ``base``, without modifying either: nested maps merge, other values replace."""
    merged = dict(base)
    for key, value in overlay.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def compose_values(sources: Iterable[ValuesLayer], inline: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``sources`` in order, then the inline ``spec.values``; a non-map source raises ValuesError.

    An empty document (``None``, as YAML parses an empty file) contributes nothing, like an empty values file
    in Helm; anything else that is not a map cannot be merged and is reported with its source's name.
    """
    merged: dict[str, Any] = {}
    for layer in sources:
        if layer.values is None:
            continue
        if not isinstance(layer.values, Mapping):
            kind = type(layer.values).__name__
            raise ValuesError(layer.source, f"values must be a map of keys to values, not a {kind}")
        if depth_of(layer.values) > VALUES_DEPTH_MAX:
            raise ValuesError(layer.source, too_deep_message())
        merged = deep_merge(merged, layer.values)
    return deep_merge(merged, inline)
