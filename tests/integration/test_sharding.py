"""Shards on one control plane: an unsharded operator and shards a and b split the HelmReleases by label.

Who handled a release is read from each operator's own log (JSON lines: kopf names the object of every handler and
timer it runs), so "exactly one" is checked against what every operator did, not only against the outcome.
"""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    StartOperator,
    create_hr,
    delete_and_wait_gone,
    get_hr,
    helmrelease,
    ready,
    wait_for_hr,
    wait_for_resyncs,
)
from tests.support.wait import eventually

from helmrelease.adapters.kube import KubeClient
from helmrelease.api.sharding import SHARD_LABEL, shard_selector

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

SHARDS: tuple[str | None, ...] = (None, "a", "b")
#: Release name → its shard label (None: no label); "orphan" names a shard no operator serves.
RELEASES: dict[str, str | None] = {"plain": None, "in-a": "a", "in-b": "b", "orphan": "c"}


def handled(operator: Operator, namespace: str, since: int = 0, saying: str = "") -> set[str]:
    """The HelmReleases of `namespace` any handler or timer of `operator` ran for (from byte `since` of its log;
    only lines `saying` that, if given)."""
    names = set()
    for line in operator.log()[since:].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        ref = entry.get("k8s_ref")
        if not ref or saying not in entry.get("message", ""):
            continue
        obj: dict[str, Any] = ast.literal_eval(ref)
        if obj.get("namespace") == namespace and obj.get("kind") == "HelmRelease":
            names.add(str(obj["name"]))
    return names


def labelled(name: str, chart: dict[str, str], shard: str | None) -> dict[str, Any]:
    body = helmrelease(name, chart, {"message": name})
    if shard is not None:
        body["metadata"]["labels"] = {SHARD_LABEL: shard}
    return body


def history(helm: Helm, namespace: str, name: str) -> list[int]:
    return [
        entry["revision"] for entry in helm.json("history", f"{namespace}-{name}", "--namespace", namespace)
    ]


def test_every_release_is_reconciled_by_exactly_one_shard_and_relabelling_moves_it(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    api_client: k8s.ApiClient,
    namespace: str,
    chart_repo: ChartRepository,
    helm: Helm,
    workdir: Path,
) -> None:
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    operators = {
        shard: start_operator(
            "--log-format=json",
            f"--state-dir={workdir / namespace / ('state-' + (shard or 'unsharded'))}",
            *([f"--shard={shard}"] if shard else []),
            resync_interval=1,
        )
        for shard in SHARDS
    }
    for name, shard in RELEASES.items():
        create_hr(custom, namespace, labelled(name, chart, shard))
    for name in ("plain", "in-a", "in-b"):
        wait_for_hr(custom, namespace, name, ready, what="Ready")
    # Every owner resynced its release twice (each pass a chance for any other operator to have acted too).
    for name in ("plain", "in-a", "in-b"):
        wait_for_resyncs(custom, namespace, name, 2, operator=operators[RELEASES[name]])

    assert {shard: handled(operator, namespace) for shard, operator in operators.items()} == {
        None: {"plain"},
        "a": {"in-a"},
        "b": {"in-b"},
    }
    for name in ("plain", "in-a", "in-b"):
        assert history(helm, namespace, name) == [1], f"{name} was installed once, by one operator"
    # A label value no operator serves: nobody touched it, not even with a finalizer.
    orphan = get_hr(custom, namespace, "orphan")
    assert (orphan.get("status"), orphan["metadata"].get("finalizers")) == (None, None)
    assert helm.json("list", "--namespace", namespace, "--filter", "orphan") == []

    # The sidecar's list asks the API server for its shard alone.
    async def listed(shard: str | None) -> list[str]:
        items = await KubeClient(api_client).list_helmreleases(
            namespace, label_selector=shard_selector(shard)
        )
        return sorted(item["metadata"]["name"] for item in items)

    assert [asyncio.run(listed(shard)) for shard in SHARDS] == [["plain"], ["in-a"], ["in-b"]]

    # Relabel in-a into shard b: b takes it over (its handlers run for it), a stops (none of its handlers do).
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "in-a", {"metadata": {"labels": {SHARD_LABEL: "b"}}}
    )
    eventually(
        lambda: "in-a" in handled(operators["b"], namespace),
        60,
        "shard b to handle in-a",
        context=operators["b"].tail,
    )
    wait_for_resyncs(custom, namespace, "in-a", 2, operator=operators["b"])
    mark = len(operators["a"].log())
    wait_for_resyncs(custom, namespace, "in-a", 3, operator=operators["b"])
    wait_for_resyncs(custom, namespace, "plain", 1, operator=operators[None])
    assert "in-a" not in handled(operators["a"], namespace, since=mark), operators["a"].tail()
    assert "in-a" not in handled(operators[None], namespace)
    hr = get_hr(custom, namespace, "in-a")
    assert ready(hr)
    assert hr["metadata"]["finalizers"] == ["b.shard.helm.fluxcd.io/finalizer"], "a removed its own, b added"
    assert history(helm, namespace, "in-a") == [1], "moving a release does not upgrade it"

    # Its new shard uninstalls it.
    delete_and_wait_gone(custom, namespace, "in-a", operator=operators["b"])
    assert helm.json("list", "--namespace", namespace, "--filter", "in-a") == []
    assert "in-a" in handled(operators["b"], namespace, saying="Handler 'uninstall' succeeded")
