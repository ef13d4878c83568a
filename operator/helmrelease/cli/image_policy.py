"""``helmrelease image-policy``: the image automation sidecar, a process of its own next to the operator.

Every ``--interval`` seconds it scans the images of automated HelmReleases and moves their tags per the
``fluxcd.io/tag.*`` policies (see ``helmrelease.automation``). ``--once`` runs one cycle and exits: 0 when
everything could be decided, 1 when something failed (a registry, a policy, a patch, git), 2 for bad flags.

Registry credentials, most specific first: the Secret a release names in ``image.helm.fluxcd.io/pull-secret``,
the ``imagePullSecrets`` of its ServiceAccount (``spec.serviceAccountName``, else ``default``), and the
``--docker-config`` file. The registry flags are shared with ``helmrelease images list`` and ``update``.

Push, not only poll: ``--webhook-port`` serves ``POST /hooks/distribution``, ``/hooks/dockerhub``,
``/hooks/harbor``, ``/hooks/ghcr`` and ``/hooks/quay``; a push notification rescans the releases that use the
pushed repository at once (the polling cycle stays, as the fallback). Senders authenticate with the token in
``--webhook-token-file`` (a mounted Secret): ``Authorization: Bearer <token>``, ``?token=<token>`` for Docker
Hub and Quay, which cannot send headers, and as the webhook secret GitHub signs with.

Git write-back (``--git-url``) commits each tag move to the manifests in git before the cluster is patched,
for releases annotated ``image.helm.fluxcd.io/git-writeback: "true"`` or, with ``--git-writeback-all``, for
every automated release.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from helmrelease.adapters.files import checked_relative_path
from helmrelease.adapters.git import DEFAULT_AUTHOR, Author, GitRemote, GitRepository, SshCredentials
from helmrelease.adapters.kube import KubeClient, api_client
from helmrelease.adapters.registry import (
    CredentialStore,
    DockerConfigError,
    Platform,
    RegistryConfig,
    RegistryMetrics,
)
from helmrelease.adapters.registry.tagcache import FILE_NAME, TagCacheFile
from helmrelease.api.constants import DEFAULT_GIT_REF
from helmrelease.automation import (
    AutomationMetrics,
    Endpoints,
    GitWriteback,
    ImagePolicyService,
    ImagePolicySettings,
    RegistryPool,
)
from helmrelease.automation.journal import FILE_NAME as JOURNAL_FILE_NAME
from helmrelease.automation.push import DEFAULT_SETTLE, PushRescans
from helmrelease.automation.webhooks import WebhookMetrics, hook_routes
from helmrelease.cli.argtypes import (
    InvalidValue,
    log_level,
    one_of,
    port,
    positive_int,
    positive_number,
    positive_seconds,
    shard,
)
from helmrelease.cli.logs import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS, configure_logging
from helmrelease.images.manifests import DEFAULT_NAMESPACE

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_BAD_CONFIG = 2
DEFAULT_PLATFORM = "linux/amd64"
#: Entries of each digest cache (manifests, config blobs). An LRU smaller than the tags scanned per cycle
#: misses every time (each cycle walks them in the same order), so this covers 100 000 images.
DEFAULT_CACHE_ENTRIES = 100_000

_log = logging.getLogger(__name__)


# --- flags shared with `helmrelease images` ----------------------------------------------------------


def host_path(text: str) -> tuple[str, Path]:
    """``HOST=PATH`` (``registry.internal:5000=/etc/ca/internal.pem``)."""
    host, equals, path = text.partition("=")
    if not equals or not host.strip() or not path.strip():
        raise InvalidValue(f"{text!r} is not HOST=PATH")
    return host.strip().lower(), Path(path.strip())


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    """How registries are reached: transport, trust, platform and operator-level credentials."""
    group = parser.add_argument_group("registries")
    group.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="registry host[:port] spoken to over plain http (repeatable)",
    )
    group.add_argument(
        "--registry-ca",
        action="append",
        type=host_path,
        default=[],
        metavar="HOST=PATH",
        help="PEM CA bundle trusted for that registry instead of the system's (repeatable)",
    )
    group.add_argument(
        "--docker-config",
        type=Path,
        metavar="PATH",
        help="a mounted .dockerconfigjson with credentials for every release (after their own)",
    )
    group.add_argument(
        "--platform",
        default=DEFAULT_PLATFORM,
        help="the image of a multi-platform index whose build time counts (default %(default)s)",
    )
    group.add_argument(
        "--registry-concurrency",
        type=positive_int,
        default=RegistryConfig.concurrency,
        help="requests in flight per registry (default %(default)s)",
    )
    group.add_argument(
        "--registry-cache-size",
        type=positive_int,
        default=DEFAULT_CACHE_ENTRIES,
        metavar="ENTRIES",
        help="manifests and config blobs remembered by digest across scans, and tags in the tag cache; keep "
        "it above the number of tags scanned per cycle (default %(default)s)",
    )
    group.add_argument(
        "--registry-rps",
        type=positive_number,
        default=RegistryConfig.requests_per_second,
        help="requests per second per registry, on average (default %(default)s)",
    )


def add_kubeconfig_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="kubeconfig file (default: in-cluster service account, else KUBECONFIG or ~/.kube/config)",
    )


def registry_config(args: argparse.Namespace) -> RegistryConfig:
    """The registry client's settings from the flags; raises ``ValueError`` or ``OSError`` on bad ones."""
    ca_bundles = {host: path.read_text(encoding="utf-8") for host, path in args.registry_ca}
    return RegistryConfig(
        insecure_hosts=frozenset(args.insecure_registry),
        ca_bundles=ca_bundles,
        platform=Platform.parse(args.platform),
        concurrency=args.registry_concurrency,
        requests_per_second=args.registry_rps,
        burst=max(RegistryConfig.burst, args.registry_concurrency),
        config_cache_size=args.registry_cache_size,
        manifest_cache_size=args.registry_cache_size,
    )


def operator_credentials(path: Path | None) -> CredentialStore:
    """The ``--docker-config`` file's credentials; raises ``DockerConfigError`` or ``OSError``."""
    if path is None:
        return CredentialStore()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise DockerConfigError(f"{path} is not JSON") from None
    if not isinstance(config, dict):
        raise DockerConfigError(f"{path} is not a JSON object")
    return CredentialStore.from_docker_configs(config)


# --- image-policy ------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "image-policy",
        help="run the image automation sidecar",
        description="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=ImagePolicySettings.interval,
        metavar="SECONDS",
        help="seconds between the end of one scan and the start of the next (default %(default)g)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="scan HelmReleases in this namespace (repeatable); default: all namespaces",
    )
    add_registry_arguments(parser)
    add_kubeconfig_argument(parser)
    git = parser.add_argument_group("git write-back (off unless --git-url is given)")
    git.add_argument("--git-url", help="repository holding the HelmRelease manifests")
    git.add_argument(
        "--git-branch", default=DEFAULT_GIT_REF, help="branch to commit to (default %(default)s)"
    )
    git.add_argument("--git-path", help="directory of the repository to search for manifests (default: all)")
    git.add_argument("--git-author", help=f'commit author, "Name <email>" (default "{DEFAULT_AUTHOR}")')
    git.add_argument("--git-ssh-key", type=Path, help="private key for an SSH repository URL")
    git.add_argument(
        "--git-known-hosts",
        type=Path,
        help="known_hosts for the SSH remote (without it, the first host key seen is trusted)",
    )
    git.add_argument(
        "--git-writeback-all",
        action="store_true",
        help="write back every automated HelmRelease, not only those annotated "
        'image.helm.fluxcd.io/git-writeback: "true"',
    )
    git.add_argument(
        "--git-default-namespace",
        default=DEFAULT_NAMESPACE,
        help="namespace of manifests that have none (default %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "helmrelease-image-policy",
        help=f"where the git clone, the first sight of tags (first-seen.json, for min-age) and the tag cache ({FILE_NAME}: tag -> digest -> build time, so a "
        "restart scans as cheaply as a second cycle; safe to delete) and the moves not yet told (pending-moves.json) are kept "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--tag-recheck-period",
        type=positive_seconds,
        default=ImagePolicySettings.tag_recheck_period,
        metavar="SECONDS",
        help="every cached tag's digest is re-checked within this time (plus the scans' own duration), a "
        "rolling slice of ceil(tags x interval / period) per image and cycle, so re-pushed tags are "
        "noticed; the current tag and the best candidate are re-checked every cycle (default %(default)g)",
    )
    parser.add_argument(
        "--health-port", type=port, default=8081, help="HTTP /healthz port (default %(default)s; 0: off)"
    )
    parser.add_argument(
        "--metrics-port",
        type=port,
        default=9090,
        help="Prometheus /metrics port (default %(default)s; 0: off)",
    )
    hooks = parser.add_argument_group("webhooks (off unless --webhook-port is given)")
    hooks.add_argument(
        "--webhook-port",
        type=port,
        default=0,
        help="serve POST /hooks/{distribution,dockerhub,harbor,ghcr,quay} on this port (default 0: off)",
    )
    hooks.add_argument(
        "--webhook-token-file",
        type=Path,
        metavar="PATH",
        help="file holding the token webhook senders authenticate with (required with --webhook-port)",
    )
    hooks.add_argument(
        "--webhook-settle",
        type=non_negative_seconds,
        default=DEFAULT_SETTLE,
        metavar="SECONDS",
        help="seconds a rescan waits after a push for the rest of a burst (default %(default)g)",
    )
    parser.add_argument(
        "--log-format", type=one_of(*LOG_FORMATS), metavar="|".join(LOG_FORMATS), default=DEFAULT_LOG_FORMAT
    )
    parser.add_argument("--log-level", type=log_level, metavar="LEVEL", default=DEFAULT_LOG_LEVEL)
    parser.add_argument("--once", action="store_true", help="run one scan cycle and exit (for CI and tests)")
    parser.add_argument(
        "--shard",
        type=shard,
        metavar="NAME",
        help="scan only HelmReleases labelled sharding.helm.fluxcd.io/key=NAME, as the operator of that shard "
        "(give both the same --shard); default: only those without that label",
    )
    parser.set_defaults(handler=main)


def git_writeback(args: argparse.Namespace) -> GitWriteback | None:
    """The write-back configuration, or None without ``--git-url``; raises ``ValueError`` on bad flags."""
    if not args.git_url:
        given = [
            flag
            for flag in ("git_path", "git_author", "git_ssh_key", "git_known_hosts")
            if getattr(args, flag)
        ]
        if given or args.git_writeback_all:
            raise ValueError("the --git-* flags need --git-url")
        return None
    credentials = None
    if args.git_ssh_key is not None:
        credentials = SshCredentials(
            args.git_ssh_key,
            args.git_known_hosts,
            "yes" if args.git_known_hosts is not None else "accept-new",
        )
    remote = GitRemote(args.git_url, args.git_branch, credentials)
    path = checked_relative_path(args.git_path).as_posix() if args.git_path else None
    return GitWriteback(
        GitRepository(remote, args.state_dir / "git"),
        Author.parse(args.git_author) if args.git_author else DEFAULT_AUTHOR,
        path,
        all_releases=args.git_writeback_all,
        default_namespace=args.git_default_namespace,
    )


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise InvalidValue(f"{text!r} is not a number of seconds (0 or more)")
    return value


def webhook_token(args: argparse.Namespace) -> str | None:
    """The webhook token from ``--webhook-token-file``, None without ``--webhook-port``; raises ``ValueError``
    or ``OSError`` for a missing or empty file, or a token file without a port."""
    if not args.webhook_port:
        if args.webhook_token_file is not None:
            raise ValueError("--webhook-token-file needs --webhook-port")
        return None
    if args.once:
        raise ValueError("--webhook-port serves pushes while the sidecar runs: it does nothing with --once")
    if args.webhook_token_file is None:
        raise ValueError(
            "--webhook-port needs --webhook-token-file: webhooks are never served unauthenticated"
        )
    token_file: Path = args.webhook_token_file
    token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{token_file} holds no webhook token")
    return token


@dataclass(frozen=True)
class _Config:
    """Everything validated before anything starts."""

    settings: ImagePolicySettings
    registry: RegistryConfig
    credentials: CredentialStore
    webhook_token: str | None = None


def _config(args: argparse.Namespace) -> _Config:
    settings = ImagePolicySettings(
        interval=args.interval,
        namespaces=tuple(dict.fromkeys(args.namespace)),
        shard=args.shard,
        git=git_writeback(args),
        first_seen_file=args.state_dir / "first-seen.json",
        journal_file=args.state_dir / JOURNAL_FILE_NAME,
        tag_recheck_period=args.tag_recheck_period,
    )
    return _Config(
        settings, registry_config(args), operator_credentials(args.docker_config), webhook_token(args)
    )


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, args.log_level)
    try:
        config = _config(args)
    except (ValueError, OSError) as error:
        _log.error("helmrelease image-policy: %s", error)
        return EXIT_BAD_CONFIG
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: _Config) -> int:
    metrics = CollectorRegistry()
    state = TagCacheFile(args.state_dir / FILE_NAME, max_entries=args.registry_cache_size)
    pool = RegistryPool(config.registry, RegistryMetrics.create(metrics), state=state)
    api = api_client(args.kubeconfig)
    kube = KubeClient(api)
    service = ImagePolicyService(
        kube,
        pool,
        settings=config.settings,
        metrics=AutomationMetrics.create(metrics),
        operator_credentials=config.credentials,
    )
    try:
        if args.once:
            report = await service.run_cycle()
            for outcome in report.releases:
                for move in outcome.moves:
                    print(f"{outcome.release} {move.target.container}: {move.summary}", flush=True)
            return EXIT_FAILURES if report.failed else EXIT_OK
        return await _serve(args, service, metrics, config.webhook_token)
    finally:
        await pool.close()
        await kube.close()
        api.close()  # type: ignore[no-untyped-call]


async def _serve(
    args: argparse.Namespace, service: ImagePolicyService, metrics: CollectorRegistry, token: str | None
) -> int:
    pushes = None
    webhooks = None
    if token is not None:
        webhook_metrics = WebhookMetrics.create(metrics)
        pushes = PushRescans(service.rescan, webhook_metrics, settle=args.webhook_settle)
        webhooks = hook_routes(token, pushes.notify, webhook_metrics)
    endpoints = Endpoints(
        healthy=service.heartbeat.healthy,
        metrics=metrics,
        health_port=args.health_port or None,
        metrics_port=args.metrics_port or None,
        webhook_port=args.webhook_port or None,
        webhooks=webhooks,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await endpoints.start()
    _log.info("image-policy: scanning every %gs; %s", service.settings.interval, service.settings)
    if pushes is not None:
        _log.info("image-policy: webhooks on port %d: %s", args.webhook_port, ", ".join(webhooks or ()))
    try:
        if pushes is None:
            await service.run(stop)
        else:
            await asyncio.gather(service.run(stop), pushes.run(stop))
    finally:
        await endpoints.stop()
    return EXIT_OK
