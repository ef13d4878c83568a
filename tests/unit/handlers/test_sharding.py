"""Every HelmRelease handler, timer and index of the registry serves the operator's shard and no other."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from helmrelease.api.constants import PLURAL
from helmrelease.api.sharding import SHARD_LABEL
from helmrelease.handlers.operator import build_registry
from helmrelease.reconcile.settings import OperatorSettings


def _helmrelease_handlers(registry: kopf.OperatorRegistry) -> list[object]:
    found = [
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._indexing.get_all_handlers(),
    ]
    return [
        handler for handler in found if handler.selector is not None and handler.selector.any_name == PLURAL
    ]


@pytest.mark.parametrize(
    ("shard", "wanted"),
    [pytest.param(None, kopf.ABSENT, id="unsharded"), pytest.param("a", "a", id="shard-a")],
)
def test_every_helmrelease_handler_filters_on_the_shard_label(
    shard: str | None, wanted: object, tmp_path: Path
) -> None:
    registry = build_registry(OperatorSettings(state_dir=tmp_path, shard=shard), dependencies=None)
    handlers = _helmrelease_handlers(registry)
    ids = {str(handler.id) for handler in handlers}  # type: ignore[attr-defined]
    assert {"reconcile", "resync", "uninstall", "values_sources"} <= ids
    assert all(handler.labels == {SHARD_LABEL: wanted} for handler in handlers)  # type: ignore[attr-defined]


def test_a_relabelled_release_is_reconciled_by_its_new_shard(tmp_path: Path) -> None:
    registry = build_registry(OperatorSettings(state_dir=tmp_path, shard="a"), dependencies=None)
    fields = {
        tuple(handler.field or ())
        for handler in registry._changing.get_all_handlers()
        if str(handler.id).startswith("reconcile") and handler.reason == kopf.Reason.UPDATE
    }
    assert fields == {("spec",), ("metadata", "labels")}
