"""``helmrelease run``: the HelmRelease operator. Every flag also reads a HELMRELEASE_* variable (``RunSettings``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import uuid
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from helmrelease.cli.argtypes import (
    Boolean,
    FilePath,
    Integer,
    LogLevel,
    OptionalHttpUrl,
    OptionalPath,
    OptionalShard,
    OptionalText,
    Port,
    PositiveInt,
    PositiveSeconds,
    Text,
    Words,
    one_of,
    subset_of,
)
from helmrelease.cli.logs import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS, configure_logging
from helmrelease.cli.settings import CliSettings, flag, switch
from helmrelease.reconcile.settings import OperatorSettings, default_state_dir

#: Transports a git chart may be allowed (git's GIT_ALLOW_PROTOCOL names); never ``ext``, which runs commands.
GIT_PROTOCOLS: Final = ("https", "ssh", "http", "git", "file")
#: On by default, as the sidecar's (9090): beside it, in the same Pod.
DEFAULT_METRICS_PORT: Final = 9091

_DEFAULTS = OperatorSettings()


class RunSettings(CliSettings):
    """What ``helmrelease run`` is told; the variable of each field is ``HELMRELEASE_<FIELD>``."""

    namespaces: Annotated[
        Words,
        flag(
            "--namespace",
            "-n",
            repeatable=True,
            metavar="NS",
            help="watch this namespace (repeatable; the variable is comma-separated); default: all namespaces",
        ),
    ] = _DEFAULTS.namespaces
    workers: Annotated[
        PositiveInt, flag("--workers", metavar="N", help="helm operations at once across releases")
    ] = _DEFAULTS.workers
    resync_interval: Annotated[
        PositiveSeconds,
        flag(
            "--resync-interval",
            metavar="SECONDS",
            help="seconds between resyncs and drift checks of unchanged releases (jittered)",
        ),
    ] = _DEFAULTS.resync_interval
    helm: Annotated[Text, flag("--helm", metavar="PATH", help="helm binary, v3 or v4")] = (
        _DEFAULTS.helm_executable
    )
    state_dir: Annotated[
        FilePath,
        flag("--state-dir", metavar="DIR", help="helm homes, chart cache and private temporary files"),
    ] = Field(default_factory=default_state_dir)
    default_git_ref: Annotated[
        Text, flag("--default-git-ref", metavar="REF", help="ref of git charts that name none")
    ] = _DEFAULTS.default_git_ref
    chart_timeout: Annotated[
        PositiveSeconds,
        flag(
            "--chart-timeout",
            metavar="SECONDS",
            help="seconds a chart fetch may take (a repository, registry or git server that stalls) before "
            "it is stopped and reported as ChartFetchFailed",
        ),
    ] = _DEFAULTS.chart_timeout
    max_index_size: Annotated[
        PositiveInt,
        flag(
            "--max-index-size",
            metavar="MIB",
            help="largest index.yaml of a Helm repository, in MiB, that helm is given (it holds the whole index "
            "in memory); a larger one is ChartFetchFailed",
        ),
    ] = _DEFAULTS.max_index_size
    git_ssh_key: Annotated[
        OptionalPath,
        flag(
            "--git-ssh-key",
            metavar="PATH",
            help="private key for git charts over SSH (mount it from a Secret)",
        ),
    ] = _DEFAULTS.git_ssh_key
    git_known_hosts: Annotated[
        OptionalPath,
        flag(
            "--git-known-hosts",
            metavar="PATH",
            help="known_hosts for git charts over SSH: host keys are checked against it, and without it no "
            "SSH host is trusted",
        ),
    ] = _DEFAULTS.git_known_hosts
    git_protocols: Annotated[
        tuple[str, ...],
        NoDecode,
        BeforeValidator(subset_of(*GIT_PROTOCOLS)),
        flag(
            "--git-protocols",
            metavar="LIST",
            help=f"transports git charts may use, comma-separated, of {', '.join(GIT_PROTOCOLS)} "
            "(file only for local tests)",
        ),
    ] = _DEFAULTS.git_protocols
    insecure_registries: Annotated[
        Words,
        flag(
            "--insecure-registry",
            repeatable=True,
            metavar="HOST",
            help="registry host[:port] of OCI charts reached over plain HTTP (repeatable; the variable is "
            "comma-separated)",
        ),
    ] = _DEFAULTS.insecure_registries
    require_service_account: Annotated[
        Boolean,
        switch(
            "--require-service-account",
            help="multi-tenancy: every HelmRelease must set serviceAccountName and stay in its namespace",
        ),
    ] = _DEFAULTS.require_service_account
    no_adopt: Annotated[
        Boolean, switch("--no-adopt", help="refuse to take over releases that exist without an owner mark")
    ] = not _DEFAULTS.adopt_unmarked
    no_drift_detection: Annotated[
        Boolean,
        switch("--no-drift-detection", help="do not compare live objects with release manifests on resync"),
    ] = not _DEFAULTS.drift_detection
    shard: Annotated[
        OptionalShard,
        flag(
            "--shard",
            metavar="NAME",
            help="reconcile only HelmReleases labelled sharding.helm.fluxcd.io/key=NAME (and use the peering "
            "object PEERING-NAME); default: only those without that label",
        ),
    ] = _DEFAULTS.shard
    log_format: Annotated[
        str,
        BeforeValidator(one_of(*LOG_FORMATS)),
        flag("--log-format", metavar="|".join(LOG_FORMATS), help="log lines for people or for log pipelines"),
    ] = DEFAULT_LOG_FORMAT
    log_level: Annotated[LogLevel, flag("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ...")] = (
        DEFAULT_LOG_LEVEL
    )
    liveness: Annotated[
        OptionalHttpUrl,
        flag("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz"),
    ] = None
    watch_stall_after: Annotated[
        PositiveSeconds,
        flag(
            "--watch-stall-after",
            metavar="SECONDS",
            help="the --liveness probe fails once a watch has delivered nothing (no event, no bookmark) for this "
            "long: a stalled stream or an API server unreachable that long",
        ),
    ] = _DEFAULTS.watch_stall_after
    metrics_port: Annotated[
        Port,
        flag(
            "--metrics-port",
            metavar="PORT",
            help="serve Prometheus metrics at /metrics on this port (0: off)",
        ),
    ] = DEFAULT_METRICS_PORT
    peering: Annotated[
        OptionalText,
        flag(
            "--peering",
            metavar="NAME",
            help="kopf peering object name (replicas pause while a higher-priority one runs); default: standalone",
        ),
    ] = None
    priority: Annotated[
        Integer, flag("--priority", metavar="N", help="peering priority; give replicas distinct values")
    ] = 0

    @classmethod
    def given(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The flags given; ``--all-namespaces`` and ``--standalone`` override the variables they switch off."""
        given = super().given(args)
        if getattr(args, "all_namespaces", False):
            given["namespaces"] = ()
        if getattr(args, "standalone", False):
            given["peering"] = None
        return given

    def operator_settings(self) -> OperatorSettings:
        """The part the reconciler sees."""
        return OperatorSettings(
            namespaces=self.namespaces,
            workers=self.workers,
            resync_interval=self.resync_interval,
            helm_executable=self.helm,
            state_dir=self.state_dir,
            default_git_ref=self.default_git_ref,
            chart_timeout=self.chart_timeout,
            max_index_size=self.max_index_size,
            git_ssh_key=self.git_ssh_key,
            git_known_hosts=self.git_known_hosts,
            git_protocols=self.git_protocols,
            insecure_registries=self.insecure_registries,
            require_service_account=self.require_service_account,
            adopt_unmarked=not self.no_adopt,
            drift_detection=not self.no_drift_detection,
            watch_stall_after=self.watch_stall_after,
            shard=self.shard,
            claim_identity=None if self.peering is None else replica_identity(),
        )


def replica_identity() -> str:
    """Who this replica is in its claims on releases (`reconcile.claims`): the Pod's name (its hostname), the
    process, and a random part, so a restarted container is never taken for the one before it."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the HelmRelease operator",
        description="Reconcile helm.fluxcd.io/v1 HelmReleases with helm. Every setting can also come from the "
        "HELMRELEASE_* variable shown with its flag; a flag wins over its variable, and an empty variable "
        "counts as unset. Booleans take true/false, 1/0 or yes/no.",
    )
    scope = parser.add_mutually_exclusive_group()
    peering = parser.add_mutually_exclusive_group()
    RunSettings.add_arguments(parser, {"namespaces": scope, "peering": peering})
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help=f"watch the whole cluster (the default), even if {RunSettings.variable('namespaces')} is set",
    )
    peering.add_argument(
        "--standalone",
        action="store_true",
        help=f"no peering (the default), even if {RunSettings.variable('peering')} is set",
    )
    parser.set_defaults(handler=main, settings_model=RunSettings)


def main(args: argparse.Namespace) -> int:
    """Run kopf with the settings until SIGTERM/SIGINT; 1 when it cannot start (a metrics port in use)."""
    from helmrelease.handlers.wiring import StartupError, run_operator

    settings: RunSettings = args.settings
    configure_logging(settings.log_format, settings.log_level)
    operator = settings.operator_settings()
    log = logging.getLogger(__name__)
    log.info("starting helmrelease operator: %s", operator)
    try:
        asyncio.run(
            run_operator(
                operator,
                liveness=settings.liveness,
                metrics_port=settings.metrics_port or None,
                peering=settings.peering,
                priority=settings.priority,
            )
        )
    except StartupError as error:
        log.error("helmrelease run: %s", error)
        return 1
    return 0
