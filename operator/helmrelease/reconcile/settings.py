"""Operator-wide settings, from the command line; one frozen object passed down through kopf's memo.

The defaults written here are the operator's defaults: ``helmrelease run`` (``cli/run.py``) reads them from
this class for its flags and variables rather than repeating them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helmrelease.api.constants import DEFAULT_GIT_PROTOCOLS, DEFAULT_GIT_REF
from helmrelease.api.limits import INDEX_SIZE_MAX


def default_state_dir() -> Path:
    """``$TMPDIR/helmrelease-operator``: private to the operator, and gone with its Pod."""
    return Path(tempfile.gettempdir()) / "helmrelease-operator"


@dataclass(frozen=True)
class OperatorSettings:
    """What `helmrelease run` was told. Everything the reconciler may vary by deployment lives here."""

    #: Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    #: Helm operations running at once across releases (never two on one release).
    workers: int = 4
    #: Seconds between resyncs of an unchanged HelmRelease (drift checks included); jittered by 10%.
    resync_interval: float = 300.0
    helm_executable: str = "helm"
    #: Where helm's private homes, the chart cache and temporary values files live.
    state_dir: Path = field(default_factory=default_state_dir)
    #: Ref of git charts that name none.
    default_git_ref: str = DEFAULT_GIT_REF
    #: Seconds one chart fetch may take (index, package, git, dependencies) before it is stopped and retried.
    chart_timeout: float = 300.0
    #: MiB of a Helm repository's index.yaml that helm is given at most (it holds the whole index in memory).
    max_index_size: int = INDEX_SIZE_MAX // 1_048_576
    #: Private key for git charts over SSH (an operator-level Secret mounted as a file).
    git_ssh_key: Path | None = None
    #: known_hosts the SSH host keys of git chart servers are checked against (with `git_ssh_key`); without it
    #: no SSH host is trusted, since a fetch keeps no host list of its own to learn keys into.
    git_known_hosts: Path | None = None
    #: Transports git charts may use; `file` would let a tenant read repositories on the operator's disk.
    git_protocols: tuple[str, ...] = DEFAULT_GIT_PROTOCOLS
    #: Registries (host[:port]) reached over plain HTTP for OCI charts.
    insecure_registries: tuple[str, ...] = ()
    #: Multi-tenancy: every HelmRelease must name a ServiceAccount to impersonate, and may not target another
    #: namespace.
    require_service_account: bool = False
    #: Take over releases that exist without any owner mark (Flux v1 did). Off: refuse and report.
    adopt_unmarked: bool = True
    drift_detection: bool = True
    #: Seconds a Helm action runs before the status shows it in progress (Installing, Upgrading, ...); one that
    #: ends sooner has only its outcome written.
    progress_after: float = 1.0
    #: The liveness probe fails once a watch stream has shown no life (no event, no bookmark, no accepted watch
    #: request) for this long; watch requests are renewed at a third of it, so a quiet stream shows life within.
    watch_stall_after: float = 180.0
    #: The shard this operator serves: HelmReleases labelled ``sharding.helm.fluxcd.io/key`` with this value;
    #: None serves those without the label (``api.sharding``).
    shard: str | None = None
    #: With peering (several replicas): who this replica is in the claims it takes on releases before running Helm
    #: on them (`reconcile.claims`), so a peer never runs Helm on the same release at once. None: standalone.
    claim_identity: str | None = None

    def __post_init__(self) -> None:
        # Zero workers would queue every helm action forever; refuse it here too, not only in the CLI.
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if not self.chart_timeout > 0:
            raise ValueError(f"chart_timeout must be positive, not {self.chart_timeout}")
        if not self.resync_interval > 0:
            raise ValueError(f"resync_interval must be positive, not {self.resync_interval}")
        if not self.progress_after >= 0:
            raise ValueError(f"progress_after must not be negative, not {self.progress_after}")
        if not self.watch_stall_after > 0:
            raise ValueError(f"watch_stall_after must be positive, not {self.watch_stall_after}")
