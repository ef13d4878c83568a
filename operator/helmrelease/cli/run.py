"""``helmrelease run``: the HelmRelease operator. Flags may also come from HELMRELEASE_* environment variables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from helmrelease.cli.argtypes import log_level, positive_int, positive_seconds
from helmrelease.cli.logs import configure_logging

ENV_PREFIX = "HELMRELEASE_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(ENV_PREFIX + name, "").split(",") if item.strip()]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the HelmRelease operator",
        description="Reconcile helm.fluxcd.io/v1 HelmReleases with helm. Every flag also reads HELMRELEASE_<FLAG>.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=_env_list("NAMESPACES"),
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch the whole cluster (the default)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=int(_env("WORKERS", "4")),
        help="helm operations at once across releases (default 4)",
    )
    parser.add_argument(
        "--resync-interval",
        type=positive_seconds,
        default=float(_env("RESYNC_INTERVAL", "300")),
        help="seconds between resyncs and drift checks of unchanged releases (default 300, jittered)",
    )
    parser.add_argument(
        "--helm", default=_env("HELM", "helm"), help="helm binary, v3 or v4 (default: helm on PATH)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(_env("STATE_DIR", str(Path(tempfile.gettempdir()) / "helmrelease-operator"))),
        help="helm homes, chart cache and private temporary files",
    )
    parser.add_argument(
        "--default-git-ref",
        default=_env("DEFAULT_GIT_REF", "master"),
        help="ref of git charts that name none (default master)",
    )
    parser.add_argument(
        "--git-ssh-key",
        type=Path,
        default=os.environ.get(ENV_PREFIX + "GIT_SSH_KEY") or None,
        help="private key for git charts over SSH (mount it from a Secret)",
    )
    parser.add_argument(
        "--git-protocols",
        default=_env("GIT_PROTOCOLS", "https,ssh"),
        help="transports git charts may use, comma-separated (default https,ssh; file only for local tests)",
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=_env_list("INSECURE_REGISTRIES"),
        help="registry host[:port] of OCI charts reached over plain HTTP (repeatable)",
    )
    parser.add_argument(
        "--require-service-account",
        action="store_true",
        default=_env("REQUIRE_SERVICE_ACCOUNT", "") == "true",
        help="multi-tenancy: every HelmRelease must set serviceAccountName and stay in its namespace",
    )
    parser.add_argument(
        "--no-adopt",
        action="store_true",
        default=_env("NO_ADOPT", "") == "true",
        help="refuse to take over releases that exist without an owner mark",
    )
    parser.add_argument(
        "--no-drift-detection",
        action="store_true",
        default=_env("NO_DRIFT_DETECTION", "") == "true",
        help="do not compare live objects with release manifests on resync",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default=_env("LOG_FORMAT", "text"))
    parser.add_argument("--log-level", type=log_level, default=_env("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--liveness",
        default=_env("LIVENESS", "") or None,
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        default=_env("PEERING", "") or None,
        help="kopf peering object name (replicas pause while a higher-priority one runs)",
    )
    peering.add_argument("--standalone", action="store_true", help="no peering (the default)")
    parser.add_argument(
        "--priority",
        type=int,
        default=int(_env("PRIORITY", "0")),
        help="peering priority; give replicas distinct values",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Build the settings and run kopf until SIGTERM/SIGINT."""
    from helmrelease.handlers.wiring import run_operator
    from helmrelease.reconcile.settings import OperatorSettings

    configure_logging(args.log_format, args.log_level)
    settings = OperatorSettings(
        namespaces=tuple(dict.fromkeys(args.namespace)) if not args.all_namespaces else (),
        workers=args.workers,
        resync_interval=args.resync_interval,
        helm_executable=args.helm,
        state_dir=args.state_dir,
        default_git_ref=args.default_git_ref,
        git_ssh_key=args.git_ssh_key,
        git_protocols=tuple(p.strip() for p in args.git_protocols.split(",") if p.strip()),
        insecure_registries=tuple(args.insecure_registry),
        require_service_account=args.require_service_account,
        adopt_unmarked=not args.no_adopt,
        drift_detection=not args.no_drift_detection,
    )
    logging.getLogger(__name__).info("starting helmrelease operator: %s", settings)
    asyncio.run(
        run_operator(
            settings,
            liveness=args.liveness,
            peering=None if args.standalone else args.peering,
            priority=args.priority,
        )
    )
    return 0
