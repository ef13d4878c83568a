"""A whole HelmRelease object, the defaults that need its name, and a parser that raises SpecError."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from helmrelease.api.constants import RELEASE_NAME_MAX_LENGTH, Reason
from helmrelease.api.errors import SpecError, SpecProblem
from helmrelease.api.ownership import antecedent_value
from helmrelease.api.spec import (
    GIT_CHART_TAG,
    REPOSITORY_CHART_TAG,
    UNSUPPORTED_HELM_VERSION_ERROR,
    VALUES_TOO_DEEP_ERROR,
    ApiModel,
    HelmReleaseSpec,
)
from helmrelease.api.status import HelmReleaseStatus

# Helm's own release-name rule (a DNS-1123 subdomain); Helm checks it only when it is about to install.
_RELEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_UNION_TAGS = frozenset({REPOSITORY_CHART_TAG, GIT_CHART_TAG})
_SPECIFIC_REASONS = {
    UNSUPPORTED_HELM_VERSION_ERROR: Reason.UNSUPPORTED_HELM_VERSION,
    VALUES_TOO_DEEP_ERROR: Reason.VALUES_TOO_DEEP,
}


class ObjectMeta(ApiModel):
    """The parts of ``metadata`` the operator reads."""

    name: str = Field(min_length=1)
    namespace: str = "default"
    generation: int = 0
    uid: str | None = None
    annotations: dict[str, str] = {}
    deletion_timestamp: datetime | None = None


class HelmRelease(ApiModel):
    """A HelmRelease as read from the API: use ``parse_helmrelease`` to get problems as a ``SpecError``."""

    metadata: ObjectMeta
    spec: HelmReleaseSpec
    status: HelmReleaseStatus = HelmReleaseStatus()

    @field_validator("status", mode="wrap")
    @classmethod
    def _unreadable_status_is_empty(cls, value: Any, handler: Any) -> HelmReleaseStatus:
        """A status we cannot read (edited by hand) counts as none.

        The loop re-derives it, at worst with one extra upgrade, instead of refusing a good spec.
        """
        try:
            status: HelmReleaseStatus = handler(value)
        except ValidationError:
            return HelmReleaseStatus()
        return status

    @property
    def target_namespace(self) -> str:
        return self.spec.target_namespace or self.metadata.namespace

    @property
    def release_name(self) -> str:
        """``spec.releaseName``, else ``<targetNamespace>-<name>``.

        When the release goes to another namespace, the HelmRelease's namespace is prefixed, so two namespaces
        installing the same name into one target namespace do not collide.
        """
        if self.spec.release_name:
            return self.spec.release_name
        if self.target_namespace != self.metadata.namespace:
            return f"{self.metadata.namespace}-{self.target_namespace}-{self.metadata.name}"
        return f"{self.target_namespace}-{self.metadata.name}"

    @property
    def antecedent(self) -> str:
        """The ``helm.fluxcd.io/antecedent`` value this object's release resources carry."""
        return antecedent_value(self.metadata.namespace, self.metadata.name)

    @property
    def deleting(self) -> bool:
        return self.metadata.deletion_timestamp is not None


def release_name_problem(release: HelmRelease) -> SpecProblem | None:
    """Helm's 53-character and DNS-1123 limits on the resolved release name, checked before Helm trips."""
    name = release.release_name
    explicit = bool(release.spec.release_name)
    subject = repr(name) if explicit else f"the default release name {name!r}"
    hint = "" if explicit else "; set spec.releaseName"
    if len(name) > RELEASE_NAME_MAX_LENGTH:
        message = f"{subject} is {len(name)} characters, Helm allows {RELEASE_NAME_MAX_LENGTH}{hint}"
    elif not _RELEASE_NAME.match(name):
        message = (
            f"{subject} is not a valid Helm release name (lower-case letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit){hint}"
        )
    else:
        return None
    return SpecProblem("spec.releaseName", message, Reason.INVALID_RELEASE_NAME)


def parse_helmrelease(body: Mapping[str, Any]) -> HelmRelease:
    """Parse an object from the API; raise ``SpecError`` naming every field that cannot work.

    Unknown fields are ignored, so objects written for a newer version still reconcile with this one.
    """
    try:
        release = HelmRelease.model_validate(body)
    except ValidationError as error:
        raise SpecError([_problem(detail) for detail in error.errors(include_url=False)]) from error
    problem = release_name_problem(release)
    if problem is not None:
        raise SpecError([problem])
    return release


def _problem(detail: ErrorDetails) -> SpecProblem:
    path = ""
    for part in detail["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_TAGS:
            path += f".{part}" if path else part
    reason = _SPECIFIC_REASONS.get(detail["type"], Reason.INVALID_SPEC)
    return SpecProblem(path or "(object)", detail["msg"], reason)
