"""How a chart source fails, whichever program fetched it: one family of errors under `HelmError`.

`helm pull` failures are classified by helm's table into `ChartNotFound`, `RepositoryUnreachable`,
`Unauthorized` and `Timeout`; git failures by git's table (`adapters.git.failure_kind`) into `GitError`s that are
those same kinds (`RefNotFound` is a `ChartNotFound`, `RemoteUnreachable` a `RepositoryUnreachable`, `AuthFailed`
an `Unauthorized`, `GitTimeout` a `Timeout`, `TransportRefused` an `InvalidChartSource`), so a chart fetch raises
git's error as it is, mapped once. Sources refused before or after fetching are `InvalidChartSource`. The family
stays under `HelmError`, which is what the reconciler catches around a chart fetch.
"""

from __future__ import annotations

from helmrelease.adapters.helm import HelmError


class InvalidChartSource(HelmError):
    """The chart source is refused: a path escaping the repository, a disallowed transport, no chart there."""
