"""Flux v2's request annotations: which tokens a pass is asked to handle (reconcile.requests)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile.requests import TOKEN_MAX, Requests, pending_in, pending_requests, wants_a_pass

REQ, FORCE, RESET = (f"reconcile.fluxcd.io/{key}" for key in ("requestedAt", "forceAt", "resetAt"))


def handled(
    reconcile: str | None = None, force: str | None = None, reset: str | None = None
) -> HelmReleaseStatus:
    return HelmReleaseStatus(
        last_handled_reconcile_at=reconcile, last_handled_force_at=force, last_handled_reset_at=reset
    )


@pytest.mark.parametrize(
    ("annotations", "status", "expected"),
    [
        pytest.param({}, handled(), Requests(), id="none"),
        pytest.param({REQ: "t1"}, handled(), Requests(reconcile="t1"), id="a-new-request"),
        pytest.param({REQ: "t1"}, handled("t1"), Requests(), id="handled-once"),
        pytest.param({REQ: "t2"}, handled("t1"), Requests(reconcile="t2"), id="a-new-token"),
        pytest.param({REQ: ""}, handled(), Requests(), id="empty-is-none"),
        pytest.param({REQ: "t" * (TOKEN_MAX + 1)}, handled(), Requests(), id="too-long-is-none"),
        pytest.param({REQ: "t1", FORCE: "t1"}, handled(), Requests("t1", force="t1"), id="force"),
        pytest.param({REQ: "t1", FORCE: "t0"}, handled(), Requests("t1"), id="force-needs-the-same-token"),
        pytest.param({FORCE: "t1"}, handled(), Requests(), id="force-alone-is-none"),
        pytest.param({REQ: "t1", FORCE: "t1"}, handled("t1"), Requests(force="t1"), id="force-added-later"),
        pytest.param({REQ: "t1", FORCE: "t1"}, handled("t1", "t1"), Requests(), id="force-handled-once"),
        pytest.param({REQ: "t1", RESET: "t1"}, handled(), Requests("t1", reset="t1"), id="reset"),
        pytest.param(
            {REQ: "t1", RESET: "t1"}, handled("t1", reset="t1"), Requests(), id="reset-handled-once"
        ),
        pytest.param(
            {REQ: "t1", FORCE: "t1", RESET: "t1"}, handled(), Requests("t1", "t1", "t1"), id="all-three"
        ),
    ],
)
def test_pending_requests(annotations: dict[str, str], status: HelmReleaseStatus, expected: Requests) -> None:
    assert pending_requests(annotations, status) == expected
    assert bool(pending_requests(annotations, status)) is (expected != Requests())


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"metadata": {"annotations": {REQ: "t1"}}}, Requests("t1"), id="new"),
        pytest.param(
            {"metadata": {"annotations": {REQ: "t1"}}, "status": {"lastHandledReconcileAt": "t1"}},
            Requests(),
            id="handled",
        ),
        pytest.param(
            {"metadata": {"annotations": {REQ: "t1"}}, "status": {"failures": "many"}},
            Requests("t1"),
            id="unreadable-status-handled-nothing",
        ),
        pytest.param({"metadata": {"annotations": None}}, Requests(), id="no-annotations"),
        pytest.param({"metadata": "garbage"}, Requests(), id="garbled-metadata"),
        pytest.param({}, Requests(), id="empty"),
    ],
)
def test_pending_in_an_object(body: dict[str, Any], expected: Requests) -> None:
    assert pending_in(body) == expected


@given(
    st.dictionaries(st.sampled_from([REQ, FORCE, RESET, "other"]), st.text(max_size=8)),
    st.builds(handled, st.none() | st.text(max_size=8), st.none() | st.text(max_size=8)),
)
def test_a_pending_token_is_always_the_requested_one_and_never_the_handled_one(
    annotations: dict[str, str], status: HelmReleaseStatus
) -> None:
    requests = pending_requests(annotations, status)
    for token, last in (
        (requests.reconcile, status.last_handled_reconcile_at),
        (requests.force, status.last_handled_force_at),
        (requests.reset, status.last_handled_reset_at),
    ):
        assert token is None or (token == annotations[REQ] and token != last)


@pytest.mark.parametrize(
    ("body", "retrying", "wanted"),
    [
        pytest.param({"metadata": {"annotations": {REQ: "t1"}}}, False, True, id="a-new-token"),
        pytest.param({"metadata": {"annotations": {"team": "a"}}}, False, False, id="another-annotation"),
        pytest.param(
            {"metadata": {"annotations": {REQ: "t1"}}, "status": {"lastHandledReconcileAt": "t1"}},
            False,
            False,
            id="handled",
        ),
        pytest.param(
            {"metadata": {"annotations": {REQ: "t1"}}, "status": {"lastHandledReconcileAt": "t1"}},
            True,
            True,
            id="the-retry-of-a-failed-requested-pass",
        ),
    ],
)
def test_an_annotation_change_wants_a_pass(body: dict[str, Any], retrying: bool, wanted: bool) -> None:
    assert wants_a_pass(body, retrying=retrying) is wanted
