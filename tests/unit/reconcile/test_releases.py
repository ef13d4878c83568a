"""The release index: what a Helm storage Secret's labels say about a release."""

from __future__ import annotations

import pytest

from helmrelease.adapters.helm import label_argument
from helmrelease.reconcile.releases import (
    DIGEST_LABEL,
    IndexedRelease,
    ReleaseIndexView,
    digest_label,
    latest,
    owner_labels,
    release_index_entry,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param(
            {"owner": "helm", "name": "web", "version": "3", "status": "deployed"},
            {("apps", "web"): IndexedRelease(3, "deployed")},
            id="plain-helm",
        ),
        pytest.param(
            {
                "owner": "helm",
                "name": "web",
                "version": "1",
                "status": "failed",
                **owner_labels("team", "web"),
            },
            {("apps", "web"): IndexedRelease(1, "failed", "team", "web")},
            id="ours",
        ),
        pytest.param(
            {
                "owner": "helm",
                "name": "web",
                "version": "4",
                "status": "deployed",
                **owner_labels("t", "w", DIGEST),
            },
            {("apps", "web"): IndexedRelease(4, "deployed", "t", "w", digest_label(DIGEST))},
            id="ours-with-its-digest",
        ),
        pytest.param({"owner": "helm", "name": "web"}, None, id="no-version"),
        pytest.param({"owner": "helm", "version": "2"}, None, id="no-name"),
        pytest.param({"owner": "helm", "name": "web", "version": "v2"}, None, id="version-not-a-number"),
        pytest.param(
            {"owner": "helm", "name": "web", "version": "2"},
            {("apps", "web"): IndexedRelease(2, "unknown")},
            id="no-status",
        ),
    ],
)
def test_release_index_entry(labels: dict[str, str], expected: object) -> None:
    assert release_index_entry("apps", labels) == expected


def test_latest_is_the_highest_revision() -> None:
    revisions = [
        IndexedRelease(1, "superseded"),
        IndexedRelease(3, "pending-upgrade"),
        IndexedRelease(2, "superseded"),
    ]
    assert latest(revisions) == IndexedRelease(3, "pending-upgrade")
    assert latest([]) is None


def test_owner_is_namespace_and_name() -> None:
    assert IndexedRelease(1, "deployed", "team", "web").owner == "team/web"
    assert IndexedRelease(1, "deployed", "team", None).owner is None


def test_view_over_an_index() -> None:
    index = {("apps", "web"): [IndexedRelease(1, "superseded"), IndexedRelease(2, "deployed")]}
    view = ReleaseIndexView(index)
    assert view.latest("apps", "web") == IndexedRelease(2, "deployed")
    assert view.latest("apps", "other") is None


def test_the_digest_label_is_a_valid_label_value_naming_the_digest() -> None:
    """A label value holds 63 characters and no ':'; sha256 has 64 hex digits: the first 63 stand for it."""
    labels = owner_labels("team", "web", DIGEST)
    assert labels[DIGEST_LABEL] == DIGEST.removeprefix("sha256:")[:63]
    assert len(labels[DIGEST_LABEL]) == 63
    label_argument(labels)  # helm --labels accepts it (raises otherwise)
    assert owner_labels("team", "web") == {k: v for k, v in labels.items() if k != DIGEST_LABEL}
