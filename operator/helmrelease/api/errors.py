"""The one error for a HelmRelease that cannot work, so handlers map it to a condition and Event once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from helmrelease.api.constants import Reason


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with the object: where (a dotted path such as ``spec.chart.version``) and what."""

    field: str
    message: str
    reason: Reason = Reason.INVALID_SPEC

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SpecError(ValueError):
    """The HelmRelease cannot be reconciled as written; retrying will not help until the object changes.

    ``reason`` is a CamelCase reason (``InvalidSpec``, ``InvalidReleaseName``, ``UnsupportedHelmVersion``) and
    the message lists every problem, so one status update tells the whole story.
    """

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))

    @property
    def reason(self) -> Reason:
        """The most specific reason among the problems (``UnsupportedHelmVersion`` beats ``InvalidSpec``)."""
        specific = (p.reason for p in self.problems if p.reason is not Reason.INVALID_SPEC)
        return next(specific, Reason.INVALID_SPEC)
