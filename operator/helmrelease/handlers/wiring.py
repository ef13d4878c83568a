"""Assemble the operator: adapters built once at startup, handed to the handlers through kopf's memo."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from helmrelease.adapters.charts import ChartFetcher, FetcherSettings
from helmrelease.adapters.helm import HelmCommand, HelmSettings
from helmrelease.adapters.kube import KubeClient
from helmrelease.handlers.operator import build_registry
from helmrelease.reconcile.service import Reconciler
from helmrelease.reconcile.settings import OperatorSettings


def kube_api_client() -> k8s.ApiClient:
    """In-cluster credentials when running in a Pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        client: k8s.ApiClient = k8s_config.new_client_from_config()  # type: ignore[no-untyped-call]
        return client
    return k8s.ApiClient()


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
        kube=KubeClient(kube_api_client()),
        helm=helm,
        charts=charts,
        http=aiohttp.ClientSession(),
        settings=settings,
    )


async def run_operator(
    settings: OperatorSettings, *, liveness: str | None, peering: str | None, priority: int
) -> None:
    registry = build_registry(settings, build_reconciler)
    await kopf.operator(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
        memo=kopf.Memo(),
    )
