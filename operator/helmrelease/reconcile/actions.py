"""What each Helm action is called: one table read by the plan, the status builder and the Events alike.

A row says how messages name the action, the reasons its success and its failure are reported under (in a
condition and in the Event), the condition that holds its outcome, the spec field that bounds it (``--timeout``),
and whether a failure the cluster caused is retried by itself. Decisions (``nothing``, ``wait-retry``,
``refuse``, ``record``) run no Helm and have no row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from helmrelease.api.constants import Action, ConditionType, Reason


@dataclass(frozen=True)
class ActionTerms:
    #: The action in a message: "Upgrading release apps/web failed".
    verb: str
    succeeded: Reason
    failed: Reason
    #: The condition that holds the outcome (and so the sentence the Event repeats).
    condition: ConditionType
    #: The spec field that bounds the action.
    timeout_field: str
    #: A recorded failure of it that the cluster caused (a quota, a webhook down) is retried after a backoff.
    cluster_retried: bool = False


_DEPLOY: Final = "spec.timeout"

TERMS: Final[dict[Action, ActionTerms]] = {
    Action.INSTALL: ActionTerms(
        "Installing", Reason.INSTALL_SUCCEEDED, Reason.INSTALL_FAILED, ConditionType.RELEASED, _DEPLOY, True
    ),
    Action.UPGRADE: ActionTerms(
        "Upgrading", Reason.UPGRADE_SUCCEEDED, Reason.UPGRADE_FAILED, ConditionType.RELEASED, _DEPLOY, True
    ),
    # An adoption is the upgrade of a release found without an owner and is recorded as that upgrade (whose row
    # then decides on retries); only its Event says Adopted / AdoptFailed.
    Action.ADOPT: ActionTerms(
        "Adopting", Reason.ADOPTED, Reason.ADOPT_FAILED, ConditionType.RELEASED, _DEPLOY
    ),
    Action.TEST: ActionTerms(
        "Testing",
        Reason.TEST_SUCCEEDED,
        Reason.TEST_FAILED,
        ConditionType.TESTED,
        "spec.test.timeout",
        True,
    ),
    Action.ROLLBACK: ActionTerms(
        "Rolling back",
        Reason.ROLLBACK_SUCCEEDED,
        Reason.ROLLBACK_FAILED,
        ConditionType.ROLLED_BACK,
        "spec.rollback.timeout",
        True,
    ),
    Action.UNLOCK: ActionTerms(
        "Recovering", Reason.UNLOCKED, Reason.UNLOCK_FAILED, ConditionType.RELEASED, _DEPLOY
    ),
    Action.UNINSTALL: ActionTerms(
        "Uninstalling", Reason.UNINSTALLED, Reason.UNINSTALL_FAILED, ConditionType.RELEASED, _DEPLOY
    ),
    Action.UNINSTALL_PREVIOUS: ActionTerms(
        "Uninstalling", Reason.UNINSTALLED, Reason.UNINSTALL_FAILED, ConditionType.RELEASED, _DEPLOY
    ),
}


def terms(action: Action) -> ActionTerms:
    """The row of a Helm action; a decision has none."""
    try:
        return TERMS[action]
    except KeyError:
        raise ValueError(f"{action} is a decision, not a Helm action") from None


def deploys(action: Action) -> bool:
    """The action installs or upgrades the release (from our chart and values)."""
    return action in (Action.INSTALL, Action.UPGRADE, Action.ADOPT)
