"""``helmrelease reconcile``: the request it writes, what each snapshot means, the wait, and the exit codes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from helmrelease.cli.waiting import (
    Mode,
    Outcome,
    Progress,
    State,
    fresh_token,
    progress_of,
    request_patch,
    verdict,
    wait_for_result,
)

TOKEN = "2026-12-02T07:00:00.000001Z"


def snapshot(
    *,
    handled: str | None = TOKEN,
    ready: str | None = "True",
    reason: str = "InstallSucceeded",
    message: str = "Release installed",
    phase: str | None = "Succeeded",
    generation: int = 2,
    observed: int | None = 2,
    **status: Any,
) -> dict[str, Any]:
    conditions = (
        [] if ready is None else [{"type": "Ready", "status": ready, "reason": reason, "message": message}]
    )
    body: dict[str, Any] = {
        "conditions": conditions,
        "phase": phase,
        "observedGeneration": observed,
        **status,
    }
    if handled is not None:
        body["lastHandledReconcileAt"] = handled
    return {"metadata": {"name": "web", "generation": generation}, "status": body}


@pytest.mark.parametrize(
    ("obj", "state"),
    [
        pytest.param(None, State.GONE, id="deleted"),
        pytest.param(snapshot(handled=None), State.PENDING, id="never-handled"),
        pytest.param(snapshot(handled="2026-01-01T00:00:00Z"), State.PENDING, id="older-token-handled"),
        pytest.param({"metadata": {}}, State.PENDING, id="no-status-at-all"),
        pytest.param(snapshot(ready=None), State.WORKING, id="handled-no-ready-yet"),
        pytest.param(
            snapshot(ready="Unknown", reason="Progressing"), State.WORKING, id="handled-progressing"
        ),
        pytest.param(snapshot(phase="Upgrading"), State.WORKING, id="handled-while-upgrading"),
        pytest.param(
            snapshot(phase="RollingBack", ready="False"), State.WORKING, id="handled-while-rolling-back"
        ),
        pytest.param(snapshot(observed=1), State.WORKING, id="ready-of-an-older-generation"),
        pytest.param(snapshot(ready="False", reason="UpgradeFailed"), State.FAILED, id="handled-failed"),
        pytest.param(snapshot(ready="False", observed=1), State.FAILED, id="failed-even-if-generation-lags"),
        pytest.param(snapshot(ready="False", reason="Suspended"), State.FAILED, id="suspended-meanwhile"),
        pytest.param(snapshot(), State.READY, id="handled-ready"),
        pytest.param(snapshot(observed=None), State.READY, id="ready-without-observed-generation"),
    ],
)
def test_each_snapshot_has_one_meaning(obj: Mapping[str, Any] | None, state: State) -> None:
    assert progress_of(obj, TOKEN).state is state


def test_a_failure_says_the_reason_and_message_of_ready() -> None:
    progress = progress_of(snapshot(ready="False", reason="UpgradeFailed", message="helm: boom"), TOKEN)
    assert progress.line() == "Failed (UpgradeFailed): helm: boom"


def test_pending_says_which_token_the_operator_last_handled() -> None:
    progress = progress_of(snapshot(handled="old-token"), TOKEN)
    assert "'old-token'" in progress.message


@pytest.mark.parametrize(
    ("mode", "status", "acknowledged"),
    [
        pytest.param(Mode.RECONCILE, {}, None, id="plain-reconcile-asks-nothing-more"),
        pytest.param(Mode.FORCE, {"lastHandledForceAt": TOKEN}, True, id="force-echoed"),
        pytest.param(Mode.FORCE, {"lastHandledForceAt": "older"}, False, id="force-not-echoed"),
        pytest.param(Mode.RESET, {"lastHandledResetAt": TOKEN}, True, id="reset-echoed"),
        pytest.param(Mode.RESET, {"lastHandledForceAt": TOKEN}, False, id="reset-needs-its-own-field"),
    ],
)
def test_force_and_reset_report_whether_they_were_echoed(
    mode: Mode, status: dict[str, str], acknowledged: bool | None
) -> None:
    assert progress_of(snapshot(**status), TOKEN, mode).acknowledged is acknowledged


@pytest.mark.parametrize(
    ("mode", "annotations"),
    [
        pytest.param(Mode.RECONCILE, {"reconcile.fluxcd.io/requestedAt": TOKEN}, id="reconcile"),
        pytest.param(
            Mode.FORCE,
            {"reconcile.fluxcd.io/requestedAt": TOKEN, "reconcile.fluxcd.io/forceAt": TOKEN},
            id="force-with-the-same-token",
        ),
        pytest.param(
            Mode.RESET,
            {"reconcile.fluxcd.io/requestedAt": TOKEN, "reconcile.fluxcd.io/resetAt": TOKEN},
            id="reset-with-the-same-token",
        ),
    ],
)
def test_the_request_patch_sets_only_the_annotations_asked_for(
    mode: Mode, annotations: dict[str, str]
) -> None:
    assert request_patch(TOKEN, mode) == {"metadata": {"annotations": annotations}}


def test_a_token_is_rfc3339_utc_with_microseconds() -> None:
    moment = dt.datetime(2026, 12, 2, 8, 30, 1, 250, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    token = fresh_token(moment)
    assert token == "2026-12-02T07:30:01.000250Z"
    assert dt.datetime.fromisoformat(token) == moment


def test_a_token_never_repeats_the_one_already_set() -> None:
    moment = dt.datetime(2026, 12, 2, 7, 0, 0, 1, tzinfo=dt.UTC)
    assert fresh_token(moment, previous=TOKEN) == "2026-12-02T07:00:00.000002Z"


class Script:
    """Snapshots returned one per read, the last repeated; a clock that moves only when the wait sleeps."""

    def __init__(self, *snapshots: Mapping[str, Any] | None) -> None:
        self.snapshots = list(snapshots)
        self.now = 0.0
        self.reads = 0
        self.reported: list[Progress] = []

    async def read(self) -> Mapping[str, Any] | None:
        self.reads += 1
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def wait(self, wait_seconds: float = 10, mode: Mode = Mode.RECONCILE) -> Outcome:
        return await wait_for_result(
            self.read,
            TOKEN,
            mode=mode,
            wait_seconds=wait_seconds,
            clock=lambda: self.now,
            sleep=self.sleep,
            report=self.reported.append,
            interval=1.0,
        )


async def test_the_wait_ends_at_the_first_final_snapshot_and_reports_each_change_once() -> None:
    script = Script(
        snapshot(handled=None),
        snapshot(handled=None),
        snapshot(ready="Unknown", reason="Progressing", message="upgrading"),
        snapshot(),
        snapshot(ready="False"),  # never read: the wait ended
    )
    outcome = await script.wait()
    assert outcome == Outcome(progress_of(snapshot(), TOKEN))
    assert [progress.state for progress in script.reported] == [State.PENDING, State.WORKING, State.READY]
    assert script.reads == 4


async def test_the_wait_gives_up_at_the_deadline_after_one_last_read() -> None:
    script = Script(snapshot(handled=None))
    outcome = await script.wait(wait_seconds=3.5)
    assert outcome.timed_out
    assert outcome.progress.state is State.PENDING
    assert script.now == 3.5
    assert script.reads == 5  # at 0, 1, 2, 3 and 3.5


async def test_a_result_that_arrives_at_the_deadline_counts() -> None:
    script = Script(snapshot(handled=None), snapshot(handled=None), snapshot())
    outcome = await script.wait(wait_seconds=2)
    assert not outcome.timed_out
    assert outcome.progress.state is State.READY


@pytest.mark.parametrize(
    ("outcome", "code", "words"),
    [
        pytest.param(Outcome(progress_of(snapshot(), TOKEN)), 0, "Ready (InstallSucceeded)", id="ready"),
        pytest.param(
            Outcome(progress_of(snapshot(ready="False", reason="UpgradeFailed"), TOKEN)),
            1,
            "handled, but not Ready: Failed (UpgradeFailed)",
            id="handled-not-ready",
        ),
        pytest.param(
            Outcome(progress_of(snapshot(handled=None), TOKEN), timed_out=True),
            1,
            "timed out after 5m: the operator did not pick up the request",
            id="timeout-before-pickup",
        ),
        pytest.param(
            Outcome(progress_of(snapshot(phase="Upgrading"), TOKEN), timed_out=True),
            1,
            "timed out after 5m: the request was handled but the release did not settle",
            id="timeout-while-working",
        ),
        pytest.param(Outcome(progress_of(None, TOKEN)), 2, "deleted", id="deleted-meanwhile"),
    ],
)
def test_exit_codes(outcome: Outcome, code: int, words: str) -> None:
    got_code, line = verdict(outcome, "5m")
    assert got_code == code
    assert words in line
