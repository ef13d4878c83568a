"""Assemble the operator: adapters built once at startup, handed to the handlers through kopf's memo."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlsplit

import kopf
from prometheus_client import CollectorRegistry

from helmrelease.adapters import kopf_decoding, watch_health
from helmrelease.adapters.charts import ChartFetcher, FetcherSettings
from helmrelease.adapters.helm import HelmCommand, HelmSettings
from helmrelease.adapters.http_server import METRICS_PATH, HttpServer, metrics_route
from helmrelease.adapters.kube import KubeClient, api_client
from helmrelease.adapters.web import WebReader
from helmrelease.api.sharding import sharded_name
from helmrelease.handlers import retry_logging
from helmrelease.handlers.operator import build_registry
from helmrelease.reconcile.metrics import OperatorMetrics
from helmrelease.reconcile.service import Reconciler
from helmrelease.reconcile.settings import OperatorSettings


class StartupError(Exception):
    """The operator cannot start as configured; the message says why."""


async def build_reconciler(settings: OperatorSettings, metrics: OperatorMetrics) -> Reconciler:
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
            deadline=settings.chart_timeout,
            max_index_bytes=settings.max_index_size * 1_048_576,
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
        metrics=metrics,
    )


def liveness_server(url: str, health: watch_health.WatchHealth) -> HttpServer:
    """``--liveness http://HOST:PORT/PATH``: the watch-health probe on that address (kopf's would stay green with
    its watches stalled; see adapters.watch_health)."""
    parts = urlsplit(url)
    return HttpServer(
        {parts.port or 80: {parts.path or "/": watch_health.liveness_route(health)}},
        host=parts.hostname or "localhost",
    )


async def run_operator(
    settings: OperatorSettings,
    *,
    liveness: str | None,
    metrics_port: int | None,
    peering: str | None,
    priority: int,
) -> None:
    """Run kopf until it stops; with `metrics_port`, Prometheus' /metrics is served there meanwhile (on every
    interface, as the sidecar's: in a Pod, Prometheus scrapes the Pod's address)."""
    # Before any watch starts: kopf decodes with the bounded decoder, and logs planned retries as such.
    kopf_decoding.install()
    retry_logging.install()
    health = watch_health.WatchHealth(settings.watch_stall_after)
    watch_health.install(health)
    collectors = CollectorRegistry()
    # The resync passes every live HelmRelease at least once an interval (jittered by 10%): three intervals without
    # any sign of an object is a deletion the watch did not report.
    metrics = OperatorMetrics.create(collectors, stale_after=3 * settings.resync_interval)
    registry = build_registry(settings, functools.partial(build_reconciler, metrics=metrics))
    server = HttpServer({metrics_port: {METRICS_PATH: metrics_route(collectors)}} if metrics_port else {})
    probe = liveness_server(liveness, health) if liveness else None
    try:
        await server.start()
    except OSError as error:  # a port in use: before kopf starts, one line and the exit status
        raise StartupError(
            f"cannot serve metrics on port {metrics_port}: {error.strerror or error}"
        ) from None
    if probe is not None:
        try:
            await probe.start()
        except OSError as error:
            await server.stop()
            raise StartupError(
                f"cannot serve the liveness probe at {liveness}: {error.strerror or error}"
            ) from None
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=peering is None,
            # Each shard peers under its own name: shards of one peering object would pause each other by priority.
            peering_name=None if peering is None else sharded_name(peering, settings.shard),
            priority=priority,
            memo=kopf.Memo(),
        )
    finally:
        if probe is not None:
            await probe.stop()
        await server.stop()
