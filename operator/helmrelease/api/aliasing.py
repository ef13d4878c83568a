"""YAML aliases: a few hundred bytes can stand for billions of nodes, or for a structure that contains itself.

A YAML loader builds an alias as a second reference to the anchored node, so loading is cheap; the cost comes when
the data is walked as a tree (merged, measured, compared, written as JSON for helm): nine levels of nine aliases
("billion laughs") are 387 million nodes from under a kilobyte of text, and ``a: &a [*a]`` never ends. Go's YAML
library refuses "excessive aliasing" for the same reason. Every YAML the operator or the sidecar reads from a
tenant (valuesFrom sources, chart manifests, files in git) goes through `check_aliasing` before it is walked.
"""

from __future__ import annotations

from typing import Any

from helmrelease.api.limits import ALIAS_EXPANSION_MAX

# What a YAML loader builds that holds other nodes (``!!omap`` and ``!!pairs`` load as lists of tuples).
_CONTAINERS = (dict, list, tuple)


class ExcessiveAliasing(ValueError):
    """The data refers to itself, or its aliases stand for more than ``ALIAS_EXPANSION_MAX`` extra nodes."""


def _children(node: Any) -> list[Any]:
    return [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)


def expanded_size(document: Any) -> tuple[int, int]:
    """Nodes of ``document`` as written (each map, list and scalar once) and as a tree walk sees them (aliases
    expanded). Linear in the written size: each shared map or list is measured once. Raises `ExcessiveAliasing`
    when a map or list contains itself."""
    if not isinstance(document, _CONTAINERS):
        return 1, 1
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    written = 0
    # Post-order without recursion: (node, children expanded yet?).
    pending: list[tuple[Any, bool]] = [(document, False)]
    while pending:
        node, ready = pending.pop()
        key = id(node)
        if ready:
            on_path.discard(key)
            sizes[key] = 1 + sum(
                sizes[id(child)] if isinstance(child, _CONTAINERS) else 1 for child in _children(node)
            )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ExcessiveAliasing(
                "it refers to itself through an alias (a YAML anchor inside its own value)"
            )
        on_path.add(key)
        children = _children(node)
        written += 1 + sum(not isinstance(child, _CONTAINERS) for child in children)
        pending.append((node, True))
        pending.extend((child, False) for child in children if isinstance(child, _CONTAINERS))
    return written, sizes[id(document)]


def check_aliasing(document: Any) -> None:
    """Raise `ExcessiveAliasing` unless ``document`` is a finite tree whose aliases add at most
    ``ALIAS_EXPANSION_MAX`` nodes to what is written (anchors used as intended add a few)."""
    written, expanded = expanded_size(document)
    if expanded - written > ALIAS_EXPANSION_MAX:
        raise ExcessiveAliasing(
            f"its YAML aliases expand {written:,} nodes to {expanded:,}; at most {ALIAS_EXPANSION_MAX:,} nodes "
            "may come from aliases (write the values out, or use fewer nested anchors)"
        )
