"""A stable digest of what a release deploys, so "has anything changed?" is a string comparison.

The digest is sha256 over canonical JSON (sorted keys, no whitespace) of:

* the chart's identity: where it comes from (repository URL and chart name, or git URL and path) and what
  it is: the chart content digest when the caller has one, else the chart version or git commit. With a
  content digest the commit is left out on purpose: a commit that does not touch the chart's directory must
  not upgrade it;
* the merged values (after ``valueFileSecrets``, ``valuesFrom`` and ``values`` are composed);
* the release's name and target namespace, and whether previous values are reused (``resetValues: false``), as
  these change what the upgrade produces.

Left out, because they change how Helm acts and not what it deploys, so changing them alone must not upgrade:
``timeout``, ``wait``, ``maxHistory``, ``forceUpgrade``, ``disableOpenAPIValidation``, ``rollback``, ``test``,
``serviceAccountName``, and ``skipCRDs`` (Helm applies ``crds/`` at install only, never on upgrade). Changing
one of these still bumps ``metadata.generation``, which is what lets the plan retry a failed release.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from helmrelease.api.resource import HelmRelease
from helmrelease.api.spec import GitChartSource, RepoChartSource
from helmrelease.reconcile.values import ValuesError

DIGEST_PREFIX = "sha256:"


@dataclass(frozen=True)
class ChartIdentity:
    """What chart a release deploys; ``revision`` is what status.revision shows (version or commit)."""

    source: Mapping[str, str]
    revision: str
    content_digest: str | None = None

    @classmethod
    def of_repository(cls, chart: RepoChartSource, content_digest: str | None = None) -> ChartIdentity:
        return cls({"repository": chart.repository, "name": chart.name}, chart.version, content_digest)

    @classmethod
    def of_git(cls, chart: GitChartSource, commit: str, content_digest: str | None = None) -> ChartIdentity:
        return cls({"git": chart.url, "path": posixpath.normpath(chart.path)}, commit, content_digest)

    def canonical(self) -> dict[str, Any]:
        what = {"content": self.content_digest} if self.content_digest else {"revision": self.revision}
        return {"source": dict(self.source), **what}


def release_digest(release: HelmRelease, chart: ChartIdentity, values: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of everything that decides what the release deploys (see the module docstring)."""
    document = {
        "chart": chart.canonical(),
        "values": values,
        "release": {
            "name": release.release_name,
            "namespace": release.target_namespace,
            "reuseValues": release.spec.reuse_values,
        },
    }
    try:
        encoded = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as error:
        raise ValuesError("values", "contain a number JSON cannot represent (NaN or infinity)") from error
    return DIGEST_PREFIX + hashlib.sha256(encoded.encode()).hexdigest()


def short_digest(digest: str | None) -> str:
    """The first 12 hex digits, enough for a person to tell two digests apart in a message."""
    if not digest:
        return "none"
    return digest.removeprefix(DIGEST_PREFIX)[:12]
