"""The vocabulary of the HelmRelease API: resource names, phases, condition types, reasons and actions.

Every string the operator writes into a HelmRelease status or Event comes from here, so the CRD, the status
builder and the tests agree on one spelling. Phases and the first five condition types are the Flux v1 Helm
Operator's (existing dashboards and scripts read them); ``Ready`` and the reasons are ours.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "helm.fluxcd.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "HelmRelease"
PLURAL: Final = "helmreleases"

#: Helm stores the release name in a label and a Secret name; longer names fail at install time.
RELEASE_NAME_MAX_LENGTH: Final = 53
#: Seconds, for install/upgrade, rollback and test alike (Flux v1 defaults).
DEFAULT_TIMEOUT_SECONDS: Final = 300
#: Bounds of every timeout field. Helm reads ``--timeout 0s`` as "wait without limit", so 0 is refused; a day is
#: far beyond any rollout worth waiting for, and keeps our own deadline (timeout plus a margin) a sane number.
MIN_TIMEOUT_SECONDS: Final = 1
MAX_TIMEOUT_SECONDS: Final = 86400
DEFAULT_MAX_HISTORY: Final = 10
DEFAULT_MAX_RETRIES: Final = 5
#: The branch a git chart without ``ref`` follows, and the one image write-back commits to, unless configured
#: otherwise (``--default-git-ref``, ``--git-branch``); Flux v1's default for both.
DEFAULT_GIT_REF: Final = "master"
#: The transports git charts may use unless configured otherwise (``--git-protocols``); ``file`` would let a
#: tenant read repositories on the operator's disk.
DEFAULT_GIT_PROTOCOLS: Final[tuple[str, ...]] = ("https", "ssh")
#: The key read from a ConfigMap or Secret values source when none is given.
DEFAULT_VALUES_KEY: Final = "values.yaml"
#: Flux v2's request annotations (fluxcd/pkg/apis/meta): a new token in requestedAt asks for a pass now; forceAt
#: and resetAt are honoured when their token equals requestedAt's.
RECONCILE_REQUEST_ANNOTATION: Final = "reconcile.fluxcd.io/requestedAt"
FORCE_REQUEST_ANNOTATION: Final = "reconcile.fluxcd.io/forceAt"
RESET_REQUEST_ANNOTATION: Final = "reconcile.fluxcd.io/resetAt"


class Phase(StrEnum):
    """``status.phase``: what the operator is doing or last did (Flux v1 values, unchanged)."""

    CHART_FETCHED = "ChartFetched"
    CHART_FETCH_FAILED = "ChartFetchFailed"
    INSTALLING = "Installing"
    UPGRADING = "Upgrading"
    DEPLOYED = "Deployed"
    DEPLOY_FAILED = "DeployFailed"
    TESTING = "Testing"
    TEST_FAILED = "TestFailed"
    TESTED = "Tested"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"


class ConditionType(StrEnum):
    """``status.conditions[].type``; ``Ready`` summarises the others for ``kubectl wait``."""

    CHART_FETCHED = "ChartFetched"
    DEPLOYED = "Deployed"
    RELEASED = "Released"
    ROLLED_BACK = "RolledBack"
    TESTED = "Tested"
    #: True while the release's resources differ from its manifest (drift detection on); names what differs.
    DRIFTED = "Drifted"
    #: True while ``spec.suspend`` is set; Ready is then False with its reason.
    SUSPENDED = "Suspended"
    READY = "Ready"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class HelmStatus(StrEnum):
    """The status Helm records for a release revision (``helm status``)."""

    UNKNOWN = "unknown"
    DEPLOYED = "deployed"
    UNINSTALLED = "uninstalled"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    UNINSTALLING = "uninstalling"
    PENDING_INSTALL = "pending-install"
    PENDING_UPGRADE = "pending-upgrade"
    PENDING_ROLLBACK = "pending-rollback"

    @property
    def is_pending(self) -> bool:
        """A Helm operation started and has not finished: Helm refuses another one until it is recovered."""
        return self in {HelmStatus.PENDING_INSTALL, HelmStatus.PENDING_UPGRADE, HelmStatus.PENDING_ROLLBACK}


class Action(StrEnum):
    """The single next step of the reconcile loop; Helm actions are also kept in ``status.lastAction``."""

    INSTALL = "install"
    UPGRADE = "upgrade"
    TEST = "test"
    ROLLBACK = "rollback"
    UNLOCK = "unlock"
    UNINSTALL = "uninstall"
    ADOPT = "adopt"
    #: Uninstall the release this HelmRelease made under its previous name or target namespace.
    UNINSTALL_PREVIOUS = "uninstall-previous"
    #: Record what Helm already holds (a deploy whose outcome the operator did not live to record); no Helm call.
    RECORD = "record"
    REFUSE = "refuse"
    NOTHING = "nothing"
    WAIT_RETRY = "wait-retry"

    @property
    def runs_helm(self) -> bool:
        """Whether the action changes the Helm release (and so has an outcome to record)."""
        return self not in {Action.RECORD, Action.REFUSE, Action.NOTHING, Action.WAIT_RETRY}


class Reason(StrEnum):
    """CamelCase reasons for conditions, Events and plans, so a person (or an alert) can match on them."""

    # Why the plan chose its action.
    RELEASE_ABSENT = "ReleaseAbsent"
    CONFIG_CHANGED = "ConfigChanged"
    SPEC_CHANGED = "SpecChanged"
    RELEASE_FAILED = "ReleaseFailed"
    RELEASE_CHANGED_OUTSIDE = "ReleaseChangedOutside"
    DRIFT_DETECTED = "DriftDetected"
    RETRY_AFTER_ROLLBACK = "RetryAfterRollback"
    CLUSTER_RETRY = "ClusterRetry"
    ALREADY_APPLIED = "AlreadyApplied"
    RELEASE_RENAMED = "ReleaseRenamed"
    TEST_PENDING = "TestPending"
    STALE_LOCK = "StaleLock"
    #: Another replica (peering) holds the release's claim, a Lease it renews while its pass runs Helm on it.
    OPERATION_IN_PROGRESS = "OperationInProgress"
    UNMANAGED_RELEASE = "UnmanagedRelease"
    OWNED_BY_OTHER = "OwnedByOther"
    DELETING = "Deleting"
    NOT_OURS = "NotOurs"
    IN_SYNC = "InSync"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    WAITING_FOR_CHANGE = "WaitingForChange"
    TEST_FAILURE_IGNORED = "TestFailureIgnored"
    #: reconcile.fluxcd.io/forceAt asked for one install or upgrade, whatever held the release back.
    FORCE_REQUESTED = "ForceRequested"
    #: reconcile.fluxcd.io/resetAt zeroed the failure and rollback counters.
    RESET_REQUESTED = "ResetRequested"
    #: spec.suspend is true: nothing is done until it is resumed.
    SUSPENDED = "Suspended"
    #: A drift check found the resources as the manifest declares them / an upgrade corrected a drift.
    NO_DRIFT = "NoDrift"
    DRIFT_CORRECTED = "DriftCorrected"
    # Outcomes of the actions.
    CHART_FETCH_SUCCEEDED = "ChartFetchSucceeded"
    CHART_FETCH_FAILED = "ChartFetchFailed"
    INSTALL_SUCCEEDED = "InstallSucceeded"
    INSTALL_FAILED = "InstallFailed"
    UPGRADE_SUCCEEDED = "UpgradeSucceeded"
    UPGRADE_FAILED = "UpgradeFailed"
    TEST_SUCCEEDED = "TestSucceeded"
    TEST_FAILED = "TestFailed"
    ROLLBACK_SUCCEEDED = "RollbackSucceeded"
    ROLLBACK_FAILED = "RollbackFailed"
    UNLOCKED = "Unlocked"
    UNLOCK_FAILED = "UnlockFailed"
    ADOPTED = "Adopted"
    ADOPT_FAILED = "AdoptFailed"
    UNINSTALLED = "Uninstalled"
    UNINSTALL_FAILED = "UninstallFailed"
    PROGRESSING = "Progressing"
    # Problems with the HelmRelease itself (see api.errors).
    INVALID_SPEC = "InvalidSpec"
    INVALID_RELEASE_NAME = "InvalidReleaseName"
    UNSUPPORTED_HELM_VERSION = "UnsupportedHelmVersion"
    VALUES_ERROR = "ValuesError"
    VALUES_TOO_DEEP = "ValuesTooDeep"
    # kopf's bookkeeping annotations on the HelmRelease could not be read (and were ignored).
    UNREADABLE_ANNOTATION = "UnreadableAnnotation"
    # Problems with the cluster the HelmRelease points at.
    TARGET_NAMESPACE_NOT_FOUND = "TargetNamespaceNotFound"
    SERVICE_ACCOUNT_NOT_FOUND = "ServiceAccountNotFound"
