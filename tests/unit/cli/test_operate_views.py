"""What ``helmrelease get`` and ``history`` print: records from raw objects, the tables, and who made a revision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helmrelease.adapters.kube import StoredRelease
from helmrelease.cli.output import records_table, render, shown, table, truncate
from helmrelease.cli.views import (
    BY_OPERATOR,
    BY_OUTSIDE,
    HISTORY_COLUMNS,
    changed_by,
    chart_of,
    get_columns,
    history_records,
    release_record,
    sorted_records,
)
from helmrelease.reconcile.releases import digest_label, owner_labels

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def helmrelease(name: str = "web", namespace: str = "apps", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "helm.fluxcd.io/v1",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "generation": 3},
        "spec": {
            "chart": {"repository": "https://user:pw@charts.example/", "name": "app", "version": "1.2.0"}
        },
        "status": status,
    }


READY = {"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": "Release upgraded"}


def test_a_ready_release_as_get_prints_it() -> None:
    record = release_record(helmrelease(conditions=[READY], revision="1.2.0", releaseName="apps-web"))
    assert record | {"chart_source": None} == {
        "namespace": "apps",
        "name": "web",
        "ready": "True",
        "reason": "UpgradeSucceeded",
        "message": "Release upgraded",
        "revision": "1.2.0",
        "chart": "app@1.2.0",
        "chart_source": None,
        "suspended": False,
        "release_name": "apps-web",
        "release_namespace": None,
        "release_status": None,
        "helm_revision": None,
        "phase": None,
        "generation": 3,
        "observed_generation": None,
        "last_handled_reconcile_at": None,
    }
    assert "pw" not in record["chart_source"]


@pytest.mark.parametrize(
    ("obj", "ready", "suspended"),
    [
        pytest.param({"metadata": {"name": "x", "namespace": "n"}}, "Unknown", False, id="no-spec-no-status"),
        pytest.param(
            {"metadata": {"name": "x"}, "spec": "garbage", "status": ["no"]}, "Unknown", False, id="garbage"
        ),
        pytest.param({"metadata": {"name": "x"}, "spec": {"suspend": True}}, "Unknown", True, id="suspended"),
        pytest.param(
            {"metadata": {"name": "x"}, "spec": {"suspend": "yes"}}, "Unknown", False, id="not-a-boolean"
        ),
    ],
)
def test_an_object_that_does_not_parse_still_gets_a_row(
    obj: dict[str, Any], ready: str, suspended: bool
) -> None:
    record = release_record(obj)
    assert (record["ready"], record["suspended"]) == (ready, suspended)


@pytest.mark.parametrize(
    ("chart", "expected"),
    [
        pytest.param({"repository": "oci://r.example/charts", "name": "a", "version": "1"}, "a@1", id="oci"),
        pytest.param(
            {"git": "https://g.example/r", "path": "charts/a", "ref": "v1"}, "charts/a@v1", id="git"
        ),
        pytest.param(
            {"git": "https://g.example/r", "path": "charts/a"}, "charts/a@(default ref)", id="git-no-ref"
        ),
        pytest.param({}, "", id="none"),
    ],
)
def test_chart_column(chart: dict[str, str], expected: str) -> None:
    assert chart_of({"chart": chart})[0] == expected


def test_get_table_has_flux_columns_and_the_namespace_only_for_all_namespaces() -> None:
    long_message = "upgrade failed: " + "x" * 100
    failed = {"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": long_message}
    records = sorted_records(
        [
            release_record(helmrelease("web", "b", conditions=[failed], revision="1.2.0")),
            release_record(helmrelease("api", "a", conditions=[READY], revision="1.2.0")),
        ]
    )
    lines = records_table(records, get_columns(all_namespaces=True)).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "MESSAGE", "REVISION", "CHART", "SUSPENDED"]
    assert lines[1].split()[:3] == ["a", "api", "True"]
    assert lines[2].split()[:3] == ["b", "web", "False"]
    assert "…" in lines[2]
    assert long_message not in lines[2]
    assert records_table(records, get_columns(all_namespaces=False)).splitlines()[0].startswith("NAME ")


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("short", 10, "short", id="fits"),
        pytest.param("exactly ten", 11, "exactly ten", id="exact"),
        pytest.param("a much longer message", 10, "a much lo…", id="cut"),
        pytest.param("line one\n  line two", 40, "line one line two", id="one-line"),
        pytest.param("", 10, "", id="empty"),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected
    assert len(truncate(text, limit)) <= limit


def test_table_pads_every_column_but_the_last() -> None:
    assert table(["A", "LONGER", "C"], [["xx", "y", "z"]]) == "A    LONGER   C\nxx   y        z"


@pytest.mark.parametrize(
    ("value", "cell"), [(None, "-"), ("", "-"), (True, "true"), (False, "false"), (3, "3")]
)
def test_cells(value: object, cell: str) -> None:
    assert shown(value) == cell


def test_json_and_yaml_output_keep_the_keys() -> None:
    records = [{"name": "web", "suspended": False, "message": "two\nlines\n"}]
    assert json.loads(render(records, "json", lambda: "table")) == records
    assert (
        render(records, "yaml", lambda: "table")
        == "- name: web\n  suspended: false\n  message: |\n    two\n    lines"
    )
    assert render(records, "table", lambda: "table") == "table"


# --- history ------------------------------------------------------------------------------------------------------


OURS = owner_labels("apps", "web", DIGEST)
UPGRADE = "upgrade by HelmRelease apps/web"


@pytest.mark.parametrize(
    ("labels", "description", "previous", "recorded", "by", "why"),
    [
        pytest.param(OURS, UPGRADE, None, [], BY_OPERATOR, "", id="our-upgrade"),
        pytest.param(OURS, "install by HelmRelease apps/web", None, [], BY_OPERATOR, "", id="our-install"),
        pytest.param(OURS, UPGRADE, None, [digest_label(DIGEST)], BY_OPERATOR, "", id="ours-and-recorded"),
        pytest.param(
            OURS, UPGRADE, None, [digest_label(OTHER)], BY_OUTSIDE, "differs", id="digest-not-recorded"
        ),
        pytest.param(
            OURS,
            'Upgrade "apps-web" failed: boom',
            digest_label(OTHER),
            [],
            BY_OPERATOR,
            "",
            id="our-failed-upgrade",
        ),
        pytest.param(
            OURS,
            "Upgrade complete",
            digest_label(DIGEST),
            [],
            BY_OUTSIDE,
            "copied",
            id="helm-upgrade-by-hand",
        ),
        pytest.param(OURS, "Rollback to 1", digest_label(DIGEST), [], BY_OPERATOR, "rollback", id="rollback"),
        pytest.param(
            OURS, "upgrade by HelmRelease apps/other", None, [], BY_OPERATOR, "", id="new-digest-wins"
        ),
        pytest.param(
            {}, "Install complete", None, [], BY_OUTSIDE, "no digest label", id="helm-install-by-hand"
        ),
        pytest.param(owner_labels("apps", "web"), UPGRADE, None, [], BY_OUTSIDE, "no digest", id="no-digest"),
        pytest.param(
            owner_labels("apps", "other", DIGEST), UPGRADE, None, [], BY_OUTSIDE, "apps/other", id="other-hr"
        ),
        pytest.param(
            {"helm.fluxcd.io/digest": "x"}, UPGRADE, None, [], BY_OUTSIDE, "no owner", id="no-owner"
        ),
    ],
)
def test_who_made_a_revision(
    labels: dict[str, str], description: str, previous: str | None, recorded: list[str], by: str, why: str
) -> None:
    got_by, got_why = changed_by(
        labels, description, previous_digest=previous, namespace="apps", name="web", recorded=recorded
    )
    assert got_by == by
    assert why in got_why


def stored(
    revision: int, labels: dict[str, str], description: str = UPGRADE, status: str = "superseded"
) -> StoredRelease:
    return StoredRelease(
        name="apps-web",
        namespace="apps",
        revision=revision,
        status=status,
        chart_name="app",
        chart_version="0.1.0",
        manifest="",
        labels={"owner": "helm", "name": "apps-web", "version": str(revision), **labels},
        app_version="1.0",
        description=description,
        updated="2026-12-02T07:00:00Z",
    )


def test_history_checks_the_newest_revision_against_the_status_and_orders_by_revision() -> None:
    hr = helmrelease(helmRevision=4, lastAppliedDigest=OTHER, lastAttemptedDigest=OTHER)
    records = history_records(
        [
            stored(4, owner_labels("apps", "web", DIGEST), status="deployed"),
            stored(1, {}, "Install complete"),
            stored(3, owner_labels("apps", "web", DIGEST), "Upgrade complete"),
            stored(2, owner_labels("apps", "web", DIGEST)),
        ],
        hr,
    )
    assert [(r["revision"], r["changed_by"]) for r in records] == [
        (1, BY_OUTSIDE),
        (2, BY_OPERATOR),
        (3, BY_OUTSIDE),
        (4, BY_OUTSIDE),
    ]
    assert records[3]["note"] == "digest label differs from the digest the status recorded"
    assert records[1]["digest"] == digest_label(DIGEST)
    assert records[0]["chart"] == "app-0.1.0"
    lines = records_table(records, HISTORY_COLUMNS).splitlines()
    assert lines[0].split()[:4] == ["REVISION", "UPDATED", "STATUS", "CHART"]
    assert "outside (no digest label" in lines[1]
