"""Where a pass tells the user what happened: the HelmRelease's status (written only when it changed), Events and
the log.

Every write and Event goes through a `Reporter`, whose API is a Protocol: the unit tests' fakes see each one. Every
decision of a pass (an action run, a settled plan, a suspension) is one log line, `Decision`: INFO, or WARNING
when it failed or was refused, with the same fields as `extra` keys for JSON logs. The Event a decision posts is
then not logged again (`event(..., logged=True)`); an Event of its own (a problem before any decision) is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from helmrelease.adapters.kube import KubeError, NotFound, ObjectRef
from helmrelease.api.constants import Action, Reason
from helmrelease.api.status import HelmReleaseStatus
from helmrelease.reconcile import conditions
from helmrelease.reconcile.errors import ReconcileError

log = logging.getLogger(__name__)

NORMAL: Final = "Normal"
WARNING: Final = "Warning"
#: Seconds before trying again after a problem that stops a pass before Helm runs (a missing Secret, say).
RETRY_LATER: Final = 120.0


class StatusApi(Protocol):
    """The two writes of a report (`adapters.kube.KubeClient` has them)."""

    async def patch_helmrelease_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...

    async def post_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None: ...


class Result(StrEnum):
    """How a decision ended: a Helm action's outcome, or a plan that settled the pass."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: No Helm action: nothing to do, waiting (for a change, a retry), refused, suspended, recorded.
    DECIDED = "decided"
    #: An action planned for the next pass (never the same action twice in one).
    DEFERRED = "deferred"


@dataclass(frozen=True)
class Decision:
    """One decision of a pass, as its log line says it (fields for JSON logs: `fields`)."""

    helmrelease: str
    action: Action
    reason: str
    result: Result
    #: Seconds the decision took: the Helm action's run, or the pass until it settled.
    duration: float
    #: Helm's revision of the release afterwards (None: there is no release).
    revision: int | None
    #: Chart version or git commit it concerns (None: not known, e.g. on deletion).
    chart: str | None
    message: str

    @property
    def level(self) -> int:
        failed = self.result in (Result.FAILED, Result.CANCELLED) or self.action is Action.REFUSE
        return logging.WARNING if failed else logging.INFO

    def fields(self) -> dict[str, Any]:
        return {
            "helmrelease": self.helmrelease,
            "action": self.action.value,
            "reason": str(self.reason),
            "result": self.result.value,
            "duration": round(self.duration, 3),
            "revision": self.revision,
            "chart": self.chart,
        }

    def line(self) -> str:
        where = [f"{self.duration:.2f}s", f"revision {self.revision if self.revision is not None else '-'}"]
        if self.chart:
            where.append(f"chart {self.chart}")
        head = f"HelmRelease {self.helmrelease}: {self.action.value} {self.reason} {self.result.value}"
        return f"{head} ({', '.join(where)}): {self.message}"


@dataclass
class Report:
    """One HelmRelease being reported on: the object, the status being built and the status last written."""

    ref: ObjectRef
    status: HelmReleaseStatus
    written: HelmReleaseStatus


class Reporter:
    """Writes statuses and posts Events; a failed Event is a log line, a failed status write the caller's error."""

    def __init__(self, api: StatusApi, clock: Callable[[], dt.datetime]) -> None:
        self.api = api
        self.clock = clock

    async def write(self, report: Report) -> None:
        """Patch the status if it changed; a HelmRelease deleted meanwhile needs none. Other API errors raise."""
        if report.status == report.written:
            return
        try:
            await self.api.patch_helmrelease_status(
                report.ref.namespace, report.ref.name, report.status.as_patch()
            )
        except NotFound:
            return
        report.written = report.status

    def decided(self, decision: Decision) -> None:
        """The one log line of a decision."""
        log.log(decision.level, "%s", decision.line(), extra=decision.fields())

    async def event(
        self, report: Report, event_type: str, reason: str, message: str, *, logged: bool = False
    ) -> None:
        """Post an Event; `logged`: the decision it tells of has its own log line, so this one is debug only."""
        ref = report.ref
        level = logging.WARNING if event_type == WARNING else logging.INFO
        log.log(logging.DEBUG if logged else level, "%s/%s %s: %s", ref.namespace, ref.name, reason, message)
        try:
            await self.api.post_event(ref, event_type, str(reason), message)
        except KubeError as error:
            log.warning("could not post Event %s for %s/%s: %s", reason, ref.namespace, ref.name, error)

    async def problem(
        self, report: Report, reason: Reason, message: str, *, generation: int | None, temporary: bool
    ) -> ReconcileError:
        """Report a problem that stops the pass before Helm runs; the caller raises the error returned.

        `generation` is given when the problem is final for it (an invalid spec): observedGeneration records it.
        """
        before = report.status
        report.status = conditions.status_after_problem(
            report.status, reason=reason, message=message, generation=generation, now=self.clock()
        )
        if conditions_changed(before, report.status):
            await self.event(report, WARNING, reason, message)
        await self.write(report)
        return ReconcileError(reason, message, temporary=temporary, retry_after=RETRY_LATER)


def conditions_changed(before: HelmReleaseStatus, after: HelmReleaseStatus) -> bool:
    """Whether a condition says something new: a repeated decision is not worth another Event."""

    def said(status: HelmReleaseStatus) -> set[tuple[str, str, str, str]]:
        return {(c.type, c.status, c.reason, c.message) for c in status.conditions}

    return said(before) != said(after)
