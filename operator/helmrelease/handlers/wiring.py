"""Assemble the operator: adapters built once at startup, handed to the handlers through kopf's memo."""

from __future__ import annotations

import os
from pathlib import Path

import kopf

from helmrelease.adapters import kopf_decoding
from helmrelease.adapters.charts import ChartFetcher, FetcherSettings
from helmrelease.adapters.helm import HelmCommand, HelmSettings
from helmrelease.adapters.kube import KubeClient, api_client
from helmrelease.adapters.web import WebReader
from helmrelease.api.sharding import sharded_name
from helmrelease.handlers import retry_logging
from helmrelease.handlers.operator import build_registry
from helmrelease.reconcile.service import Reconciler
from helmrelease.reconcile.settings import OperatorSettings


async def build_reconciler(settings: OperatorSettings) -> Reconciler:
    """Every adapter the reconcile core needs; helm's major version is detected here, once."""
    state = settings.state_dir
    for sub in ("helm", "tmp", "charts"):
        (state / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    kubeconfig = os.environ.get("KUBECONFIG")
    helm = await HelmCommand.detect(
        HelmSettings(
            home=state / "helm",
            temp_root=state / "tmp",
            executable=settings.helm_executable,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
        )
    )
    charts = ChartFetcher(
        helm,
        FetcherSettings(
            cache_dir=state / "charts",
            plain_http_hosts=frozenset(settings.insecure_registries),
            git_protocols=settings.git_protocols,
        ),
    )
    return Reconciler(
        kube=KubeClient(api_client()),
        helm=helm,
        charts=charts,
        urls=WebReader(),
        settings=settings,
    )


async def run_operator(
    settings: OperatorSettings, *, liveness: str | None, peering: str | None, priority: int
) -> None:
    # Before any watch starts: kopf decodes with the bounded decoder, and logs planned retries as such.
    kopf_decoding.install()
    retry_logging.install()
    registry = build_registry(settings, build_reconciler)
    # Each shard peers under its own name: shards of one peering object would pause each other by priority.
    await kopf.operator(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=peering is None,
        peering_name=None if peering is None else sharded_name(peering, settings.shard),
        priority=priority,
        liveness_endpoint=liveness,
        memo=kopf.Memo(),
    )
