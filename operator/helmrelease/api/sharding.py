"""Shards: several operators split the HelmReleases of one cluster by the label ``sharding.helm.fluxcd.io/key``.

An operator started with ``--shard NAME`` owns exactly the HelmReleases labelled with that value; one started
without owns exactly those without the label. So every HelmRelease has one owner at a time (one per label value
that some operator serves; a value no operator serves is reconciled by none, as with Flux v2's sharding), and
relabelling one moves it. A shard name is an RFC 1123 label (lowercase letters, digits and ``-``, at most 63):
it is a label value, and it also names the shard's peering object and its Deployment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

SHARD_LABEL: Final = "sharding.helm.fluxcd.io/key"
#: The unsharded operator's finalizer (the operator's since before shards).
FINALIZER: Final = "helm.fluxcd.io/finalizer"
SHARD_NAME_MAX_LENGTH: Final = 63
_SHARD_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def shard_name(text: str) -> str:
    """``text`` as a shard name, or ValueError saying what a shard name may be."""
    name = text.strip()
    if len(name) > SHARD_NAME_MAX_LENGTH or not _SHARD_NAME.fullmatch(name):
        raise ValueError(
            f"must be lowercase letters, digits and '-', starting and ending with a letter or digit, at most "
            f"{SHARD_NAME_MAX_LENGTH} characters, not {text!r}"
        )
    return name


def in_shard(labels: Mapping[str, str] | None, shard: str | None) -> bool:
    """Whether an object with these labels belongs to ``shard`` (None: the unsharded operator)."""
    value = (labels or {}).get(SHARD_LABEL)
    return value is None if shard is None else value == shard


def shard_selector(shard: str | None) -> str:
    """The Kubernetes label selector of ``shard``'s objects, for lists and watches."""
    return f"!{SHARD_LABEL}" if shard is None else f"{SHARD_LABEL}={shard}"


def shard_finalizer(shard: str | None) -> str:
    """The finalizer an operator of ``shard`` puts on its HelmReleases: each shard its own. kopf removes its
    finalizer from an object none of its handlers match (one relabelled away); with one name for all, the old
    shard would remove what the new one adds, and both would go on doing so for ever."""
    return FINALIZER if shard is None else f"{shard}.shard.helm.fluxcd.io/finalizer"


def sharded_name(name: str, shard: str | None) -> str:
    """A per-shard object name (the kopf peering): ``name`` unsharded, ``name-shard`` otherwise, so two shards
    never share one peering object (peers pause each other by priority)."""
    return name if shard is None else f"{name}-{shard}"
