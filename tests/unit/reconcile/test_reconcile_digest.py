"""The release digest: stable for equal inputs, different exactly when what Helm deploys would differ."""

from __future__ import annotations

import copy
import hashlib
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.api.spec import GitChartSource, RepoChartSource
from helmrelease.reconcile.digest import ChartIdentity, release_digest, short_digest
from helmrelease.reconcile.values import ValuesError

BODY: dict[str, Any] = {
    "metadata": {"name": "podinfo", "namespace": "apps", "generation": 1},
    "spec": {"chart": {"repository": "https://charts.example.com/", "name": "podinfo", "version": "6.5.0"}},
}
VALUES = {"replicaCount": 2, "image": {"repository": "ghcr.io/stefanprodan/podinfo", "tag": "6.5.0"}}


def release(**spec: Any) -> HelmRelease:
    body = copy.deepcopy(BODY)
    body["spec"].update(spec)
    return parse_helmrelease(body)


def repo_digest(hr: HelmRelease, values: dict[str, Any] = VALUES, content: str | None = None) -> str:
    assert isinstance(hr.spec.chart, RepoChartSource)
    return release_digest(hr, ChartIdentity.of_repository(hr.spec.chart, content), values)


BASE = repo_digest(release())


#: The canonical document of BASE, spelled out: sorted keys, no whitespace.
CANONICAL = (
    '{"chart":{"revision":"6.5.0","source":{"name":"podinfo","repository":"https://charts.example.com/"}},'
    '"release":{"name":"apps-podinfo","namespace":"apps","reuseValues":false},'
    '"values":{"image":{"repository":"ghcr.io/stefanprodan/podinfo","tag":"6.5.0"},"replicaCount":2}}'
)


def test_golden_digest() -> None:
    """Pinned: changing the canonical form would upgrade every release once after an operator update."""
    assert hashlib.sha256(CANONICAL.encode()).hexdigest() == BASE.removeprefix("sha256:")
    assert BASE == "sha256:5635786dcb85fcfee395f6236a9c2e37b9bb543dfecafe8e99daee268e184a7b"


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"timeout": 900}, id="timeout"),
        pytest.param({"wait": True}, id="wait"),
        pytest.param({"maxHistory": 3}, id="maxHistory"),
        pytest.param({"forceUpgrade": True}, id="forceUpgrade"),
        pytest.param({"disableOpenAPIValidation": True}, id="disableOpenAPIValidation"),
        pytest.param({"skipCRDs": True}, id="skipCRDs-install-only"),
        pytest.param({"rollback": {"enable": True, "retry": True}}, id="rollback"),
        pytest.param({"test": {"enable": True}}, id="test"),
        pytest.param({"serviceAccountName": "deployer"}, id="serviceAccountName"),
        pytest.param({"resetValues": True}, id="explicit-resetValues-true-is-the-default"),
        pytest.param({"releaseName": "apps-podinfo"}, id="explicit-default-release-name"),
        pytest.param({"targetNamespace": "apps"}, id="explicit-own-namespace"),
        pytest.param(
            {
                "chart": {
                    "repository": "https://charts.example.com?token=abc",
                    "name": "podinfo",
                    "version": "6.5.0",
                }
            },
            id="repository-spelling",
        ),
    ],
)
def test_how_helm_acts_does_not_change_the_digest(spec: dict[str, Any]) -> None:
    assert repo_digest(release(**spec)) == BASE


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"releaseName": "podinfo"}, id="releaseName"),
        pytest.param({"targetNamespace": "web"}, id="targetNamespace"),
        pytest.param({"resetValues": False}, id="reuse-values"),
        pytest.param(
            {"chart": {"repository": "https://charts.example.com/", "name": "podinfo", "version": "6.5.1"}},
            id="chart-version",
        ),
        pytest.param(
            {"chart": {"repository": "https://mirror.example.com/", "name": "podinfo", "version": "6.5.0"}},
            id="repository",
        ),
        pytest.param(
            {
                "chart": {
                    "repository": "oci://registry.example.com/charts",
                    "name": "podinfo",
                    "version": "6.5.0",
                }
            },
            id="oci-registry",
        ),
    ],
)
def test_what_helm_deploys_changes_the_digest(spec: dict[str, Any]) -> None:
    assert repo_digest(release(**spec)) != BASE


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({**VALUES, "replicaCount": 3}, id="value-changed"),
        pytest.param({**VALUES, "extra": None}, id="null-key-added"),
        pytest.param({"replicaCount": 2}, id="key-removed"),
        pytest.param({**VALUES, "replicaCount": 2.0}, id="int-becomes-float"),
        pytest.param({**VALUES, "replicaCount": "2"}, id="int-becomes-string"),
    ],
)
def test_values_change_the_digest(values: dict[str, Any]) -> None:
    assert repo_digest(release(), values) != BASE


def test_chart_content_digest_decides_when_known() -> None:
    hr = release()
    assert repo_digest(hr, content="sha256:aaa") != repo_digest(hr, content="sha256:bbb")
    assert repo_digest(hr, content="sha256:aaa") != BASE


def git_release() -> HelmRelease:
    return release(
        chart={"git": "https://git.example.com/platform/charts.git", "ref": "main", "path": "./podinfo/"}
    )


def git_digest(commit: str, content: str | None = None, hr: HelmRelease | None = None) -> str:
    hr = hr or git_release()
    assert isinstance(hr.spec.chart, GitChartSource)
    return release_digest(hr, ChartIdentity.of_git(hr.spec.chart, commit, content), VALUES)


def test_git_commit_changes_the_digest_when_content_is_unknown() -> None:
    assert git_digest("1111111") != git_digest("2222222")


def test_git_commit_outside_the_chart_does_not_change_the_digest() -> None:
    """With the chart directory's content digest, a commit elsewhere in the repository does not upgrade."""
    assert git_digest("1111111", content="sha256:chart") == git_digest("2222222", content="sha256:chart")
    assert git_digest("1111111", content="sha256:chart") != git_digest("1111111", content="sha256:other")


def test_git_ref_and_path_spelling_do_not_change_the_digest() -> None:
    same_chart = release(chart={"git": "https://git.example.com/platform/charts.git", "path": "podinfo"})
    assert git_digest("1111111", hr=same_chart) == git_digest("1111111")


def test_revision_is_what_status_shows() -> None:
    hr = git_release()
    assert isinstance(hr.spec.chart, GitChartSource)
    assert ChartIdentity.of_git(hr.spec.chart, "abc123").revision == "abc123"
    repo = release()
    assert isinstance(repo.spec.chart, RepoChartSource)
    assert ChartIdentity.of_repository(repo.spec.chart).revision == "6.5.0"


@pytest.mark.parametrize("number", [float("nan"), float("inf")], ids=["nan", "infinity"])
def test_values_json_cannot_hold_are_a_values_error(number: float) -> None:
    with pytest.raises(ValuesError, match="NaN or infinity"):
        repo_digest(release(), {"ratio": number})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


def _reordered(value: Any, shuffle: random.Random) -> Any:
    """The same document with every map's keys in a different insertion order."""
    if isinstance(value, dict):
        keys = list(value)
        shuffle.shuffle(keys)
        return {key: _reordered(value[key], shuffle) for key in keys}
    if isinstance(value, list):
        return [_reordered(item, shuffle) for item in value]
    return value


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=5), st.randoms(use_true_random=False))
def test_key_order_never_changes_the_digest(values: dict[str, Any], shuffle: random.Random) -> None:
    hr = release()
    assert repo_digest(hr, values) == repo_digest(hr, _reordered(values, shuffle))


@pytest.mark.parametrize(
    ("digest", "short"),
    [
        pytest.param("sha256:0123456789abcdef0123", "0123456789ab", id="prefixed"),
        pytest.param(None, "none", id="none"),
        pytest.param("", "none", id="empty"),
    ],
)
def test_short_digest(digest: str | None, short: str) -> None:
    assert short_digest(digest) == short
