"""One log line per decision (reconcile.report.Decision): what it says, at which level, with which JSON keys."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from helmrelease.api.constants import Action, Reason
from helmrelease.cli.logs import JsonFormatter
from helmrelease.reconcile.report import Decision, Reporter, Result


def decision(action: Action, reason: str, result: Result, **changes: object) -> Decision:
    fields: dict[str, object] = {
        "helmrelease": "apps/web",
        "action": action,
        "reason": reason,
        "result": result,
        "duration": 2.3456,
        "revision": 3,
        "chart": "0.2.0",
        "message": "Upgraded release apps/apps-web to chart app 0.2.0",
    }
    fields.update(changes)
    return Decision(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("made", "level", "line"),
    [
        pytest.param(
            decision(Action.UPGRADE, Reason.CONFIG_CHANGED, Result.SUCCEEDED),
            logging.INFO,
            "HelmRelease apps/web: upgrade ConfigChanged succeeded (2.35s, revision 3, chart 0.2.0): "
            "Upgraded release apps/apps-web to chart app 0.2.0",
            id="upgrade",
        ),
        pytest.param(
            decision(Action.UPGRADE, Reason.FORCE_REQUESTED, Result.FAILED, message="Upgrading ... failed"),
            logging.WARNING,
            "HelmRelease apps/web: upgrade ForceRequested failed (2.35s, revision 3, chart 0.2.0): "
            "Upgrading ... failed",
            id="failed-is-a-warning",
        ),
        pytest.param(
            decision(Action.REFUSE, Reason.OWNED_BY_OTHER, Result.DECIDED, message="belongs to x"),
            logging.WARNING,
            "HelmRelease apps/web: refuse OwnedByOther decided (2.35s, revision 3, chart 0.2.0): belongs to x",
            id="refused-is-a-warning",
        ),
        pytest.param(
            decision(
                Action.NOTHING, Reason.SUSPENDED, Result.DECIDED, revision=None, chart=None, message="s"
            ),
            logging.INFO,
            "HelmRelease apps/web: nothing Suspended decided (2.35s, revision -): s",
            id="no-release-no-chart",
        ),
        pytest.param(
            decision(Action.UPGRADE, Reason.RETRY_AFTER_ROLLBACK, Result.DEFERRED, message="next pass"),
            logging.INFO,
            "HelmRelease apps/web: upgrade RetryAfterRollback deferred (2.35s, revision 3, chart 0.2.0): next pass",
            id="deferred",
        ),
    ],
)
def test_a_decision_line(made: Decision, level: int, line: str) -> None:
    assert (made.level, made.line()) == (level, line)


def test_json_logs_carry_the_decision_fields_as_keys(caplog: pytest.LogCaptureFixture) -> None:
    reporter = Reporter(api=None, clock=lambda: dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    made = decision(Action.UPGRADE, Reason.DRIFT_DETECTED, Result.SUCCEEDED)
    with caplog.at_level(logging.INFO, logger="helmrelease.reconcile.report"):
        reporter.decided(made)
    (record,) = caplog.records
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == made.line()
    assert {key: entry[key] for key in made.fields()} == {
        "helmrelease": "apps/web",
        "action": "upgrade",
        "reason": "DriftDetected",
        "result": "succeeded",
        "duration": 2.346,
        "revision": 3,
        "chart": "0.2.0",
    }
    assert entry["level"] == "info"
