"""The records ``helmrelease get`` and ``history`` print, built from what the cluster holds (pure, table-tested).

``get`` reads raw objects, not parsed ones: one HelmRelease whose spec does not parse must not hide the others,
and its row says what its status says. The keys are stable (the README lists them): scripts read ``-o json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from helmrelease.adapters.kube import StoredRelease
from helmrelease.api.constants import ConditionStatus, ConditionType
from helmrelease.api.spec import display_url
from helmrelease.cli.output import Column, truncate
from helmrelease.reconcile.releases import (
    DIGEST_LABEL,
    OWNER_NAME_LABEL,
    OWNER_NAMESPACE_LABEL,
    deploy_description,
    digest_label,
)

#: Characters of a condition message a table row shows (``-o json`` has all of it).
MESSAGE_WIDTH: Final = 60
#: Who made a revision: this HelmRelease's operator, or anyone else (helm by hand, another tool or HelmRelease).
BY_OPERATOR: Final = "operator"
BY_OUTSIDE: Final = "outside"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def chart_of(spec: Mapping[str, Any]) -> tuple[str, str]:
    """(``name@version`` or ``path@ref``, where it comes from) of a raw ``spec.chart``, credentials masked."""
    chart = _mapping(spec.get("chart"))
    if chart.get("git"):
        ref = chart.get("ref") or "(default ref)"
        return f"{chart.get('path', '')}@{ref}", display_url(str(chart["git"]))
    name, version = chart.get("name", ""), chart.get("version", "")
    return (f"{name}@{version}" if name else ""), display_url(str(chart.get("repository") or ""))


def ready_condition(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for condition in _mapping(obj.get("status")).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == ConditionType.READY:
            return condition
    return {}


def release_record(obj: Mapping[str, Any]) -> dict[str, Any]:
    """One HelmRelease as ``get`` prints it."""
    metadata, spec, status = (_mapping(obj.get(key)) for key in ("metadata", "spec", "status"))
    ready = ready_condition(obj)
    chart, source = chart_of(spec)
    return {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "ready": str(ready.get("status") or ConditionStatus.UNKNOWN),
        "reason": ready.get("reason") or None,
        "message": ready.get("message") or "",
        "revision": status.get("revision"),
        "chart": chart,
        "chart_source": source,
        "suspended": spec.get("suspend") is True,
        "release_name": status.get("releaseName"),
        "release_namespace": status.get("releaseNamespace"),
        "release_status": status.get("releaseStatus"),
        "helm_revision": status.get("helmRevision"),
        "phase": status.get("phase"),
        "generation": metadata.get("generation"),
        "observed_generation": status.get("observedGeneration"),
        "last_handled_reconcile_at": status.get("lastHandledReconcileAt"),
    }


def get_columns(all_namespaces: bool) -> list[Column]:
    """``flux get hr``'s columns, with the chart; the namespace first when listing all of them."""
    columns: list[Column] = [
        ("NAME", lambda r: r["name"]),
        ("READY", lambda r: r["ready"]),
        ("MESSAGE", lambda r: truncate(r["message"], MESSAGE_WIDTH)),
        ("REVISION", lambda r: r["revision"]),
        ("CHART", lambda r: r["chart"]),
        ("SUSPENDED", lambda r: r["suspended"]),
    ]
    if all_namespaces:
        columns.insert(0, ("NAMESPACE", lambda r: r["namespace"]))
    return columns


def sorted_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (str(r["namespace"]), str(r["name"])))


# --- history ---------------------------------------------------------------------------------------------------


#: Our deploys' descriptions (`releases.deploy_description`); Helm writes its own when an action fails.
_OUR_ACTIONS: Final = ("install", "upgrade", "adopt")


def changed_by(
    labels: Mapping[str, str],
    description: str,
    *,
    previous_digest: str | None,
    namespace: str,
    name: str,
    recorded: Sequence[str],
) -> tuple[str, str]:
    """(who, why) for one stored revision of the release of HelmRelease ``namespace/name``.

    The operator labels every revision it makes with its owner and the digest of the chart and values
    (``helm --labels``) and describes its installs and upgrades (``helm --description``). Helm copies the labels
    of the previous revision into the next, so a ``helm upgrade`` by hand carries our labels too: the
    description, or a digest that no revision before had (which only we write), tells the two apart.
    ``recorded`` are the digest labels the status says it applied or attempted, for the revision the status
    names (empty for older ones, which the status no longer describes).
    """
    digest = labels.get(DIGEST_LABEL)
    owner_namespace, owner_name = labels.get(OWNER_NAMESPACE_LABEL), labels.get(OWNER_NAME_LABEL)
    if not digest:
        return BY_OUTSIDE, "no digest label: made by helm or another tool"
    if (owner_namespace, owner_name) != (namespace, name):
        owner = f"{owner_namespace}/{owner_name}" if owner_namespace and owner_name else "no owner"
        return BY_OUTSIDE, f"labelled for HelmRelease {owner}"
    if recorded and digest not in recorded:
        return BY_OUTSIDE, "digest label differs from the digest the status recorded"
    if description in {deploy_description(action, namespace, name) for action in _OUR_ACTIONS}:
        return BY_OPERATOR, ""
    if description.startswith("Rollback to "):
        return BY_OPERATOR, "a rollback: one by hand would read the same"
    if digest != previous_digest:
        return (
            BY_OPERATOR,
            "",
        )  # a failed deploy of ours: helm replaced the description, our new digest stayed
    return BY_OUTSIDE, "made by helm by hand, which copied the operator's labels"


def history_records(stored: Sequence[StoredRelease], hr: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The revisions of the HelmRelease's release, newest last, with who made each."""
    metadata, status = _mapping(hr.get("metadata")), _mapping(hr.get("status"))
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    recorded = [
        digest_label(str(status[key]))
        for key in ("lastAppliedDigest", "lastAttemptedDigest")
        if isinstance(status.get(key), str) and status[key]
    ]
    records = []
    previous: str | None = None
    for entry in sorted(stored, key=lambda item: item.revision):
        digest = entry.labels.get(DIGEST_LABEL)
        by, why = changed_by(
            entry.labels,
            entry.description,
            previous_digest=previous,
            namespace=namespace,
            name=name,
            recorded=recorded if entry.revision == status.get("helmRevision") else [],
        )
        previous = digest
        records.append(
            {
                "revision": entry.revision,
                "updated": entry.updated or None,
                "status": entry.status,
                "chart": f"{entry.chart_name}-{entry.chart_version}",
                "app_version": entry.app_version or None,
                "description": entry.description,
                "digest": digest,
                "changed_by": by,
                "note": why or None,
            }
        )
    return records


HISTORY_COLUMNS: Final[tuple[Column, ...]] = (
    ("REVISION", lambda r: r["revision"]),
    ("UPDATED", lambda r: r["updated"]),
    ("STATUS", lambda r: r["status"]),
    ("CHART", lambda r: r["chart"]),
    ("APP VERSION", lambda r: r["app_version"]),
    ("DIGEST", lambda r: (r["digest"] or "")[:12]),
    ("BY", lambda r: r["changed_by"] + (f" ({r['note']})" if r["note"] else "")),
)
