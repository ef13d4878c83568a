"""Which HelmRelease a Helm release belongs to, read from the Flux v1 antecedent annotation.

Owner references cannot cross namespaces (a HelmRelease may install into another namespace), so Flux v1
annotated every resource of a release with ``helm.fluxcd.io/antecedent: <namespace>:helmrelease/<name>``.
We keep that format, so releases made by the old operator are recognised as ours after a migration.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

ANTECEDENT_ANNOTATION: Final = "helm.fluxcd.io/antecedent"
_KIND_SEGMENT: Final = "helmrelease"


class Ownership(StrEnum):
    """How a release found in the cluster relates to the HelmRelease being reconciled."""

    OURS = "ours"
    OTHER = "other"  # marked as belonging to another HelmRelease
    UNMARKED = "unmarked"  # no antecedent at all: installed by hand or by another tool


def antecedent_value(namespace: str, name: str) -> str:
    """The annotation value that marks a resource as made by HelmRelease ``namespace/name``."""
    return f"{namespace}:{_KIND_SEGMENT}/{name}"


def ownership_of(antecedent: str | None, *, namespace: str, name: str) -> Ownership:
    """Classify a release by its antecedent annotation (``None`` or empty when the release carries none).

    The kind segment is compared case-insensitively: Flux v1 lower-cased it, but hand-written annotations say
    ``HelmRelease``; namespace and name are compared exactly, as Kubernetes names are case-sensitive.
    """
    if not antecedent:
        return Ownership.UNMARKED
    marked_namespace, _, rest = antecedent.partition(":")
    kind, _, marked_name = rest.partition("/")
    if (marked_namespace, kind.lower(), marked_name) == (namespace, _KIND_SEGMENT, name):
        return Ownership.OURS
    return Ownership.OTHER
