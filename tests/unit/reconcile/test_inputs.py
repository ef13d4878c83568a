"""The inputs of a reconcile pass that can be checked without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helmrelease.adapters.charts import GitChart
from helmrelease.adapters.git import SshCredentials
from helmrelease.adapters.kube import Forbidden, KubeError, NotFound
from helmrelease.adapters.web import WebReadError
from helmrelease.api.resource import HelmRelease, parse_helmrelease
from helmrelease.api.spec import ChartFileSelector, SecretKeySelector
from helmrelease.reconcile.inputs import (
    Inputs,
    MissingSource,
    UnparsableSource,
    UnreadableSource,
    directory_digest,
    read_chart_file,
    sources_of,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, set(), id="none"),
        pytest.param(
            {"valueFileSecrets": [{"name": "legacy"}]}, {("apps", "Secret", "legacy")}, id="deprecated"
        ),
        pytest.param(
            {
                "valuesFrom": [
                    {"configMapKeyRef": {"name": "cm"}},
                    {"secretKeyRef": {"name": "s", "namespace": "x"}},
                ]
            },
            {("apps", "ConfigMap", "cm"), ("x", "Secret", "s")},
            id="both-kinds",
        ),
        pytest.param(
            {
                "valuesFrom": [
                    {"externalSourceRef": {"url": "http://x"}},
                    {"chartFileRef": {"path": "a.yaml"}},
                ]
            },
            set(),
            id="not-in-the-cluster",
        ),
        pytest.param(
            {"valuesFrom": ["garbage", {"configMapKeyRef": "garbage"}]}, set(), id="malformed-is-ignored"
        ),
    ],
)
def test_sources_of(spec: dict[str, Any], expected: set[tuple[str, str, str]]) -> None:
    assert sources_of("apps", spec) == expected


def test_directory_digest_follows_content_and_names_only(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("name: app\n")
    (tmp_path / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    first = directory_digest(tmp_path)
    assert first == directory_digest(tmp_path)
    (tmp_path / "templates" / "cm.yaml").write_text("kind: ConfigMap # changed\n")
    assert directory_digest(tmp_path) != first
    (tmp_path / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    assert directory_digest(tmp_path) == first
    (tmp_path / "templates" / "cm.yaml").rename(tmp_path / "templates" / "renamed.yaml")
    assert directory_digest(tmp_path) != first


@pytest.mark.parametrize(
    ("path", "error"),
    [
        pytest.param("values-prod.yaml", None, id="inside"),
        pytest.param("missing.yaml", "does not exist", id="missing"),
        pytest.param("link.yaml", "outside the chart", id="symlink-out"),
    ],
)
def test_chart_file_values(tmp_path: Path, path: str, error: str | None) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values-prod.yaml").write_text("replicas: 3\n")
    (tmp_path / "secret.yaml").write_text("password: x\n")
    (chart / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    source = ChartFileSelector.model_construct(path=path, optional=False)
    if error is None:
        assert read_chart_file(chart, source) == "replicas: 3\n"
        return
    with pytest.raises(MissingSource, match=error):
        read_chart_file(chart, source)


class FakeKube:
    """The two reads `Inputs.read_values_source` makes, failing as the API would; `identity` as KubeClient has it."""

    def __init__(self, identity: str | None, failure: KubeError | None, data: dict[str, str]) -> None:
        self.identity = identity
        self.failure = failure
        self.data = data

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        if self.failure is not None:
            raise self.failure
        return self.data

    secret_data = config_map_data


TENANT = "ServiceAccount team-a/deployer"


@pytest.mark.parametrize(
    ("identity", "failure", "data", "error", "fragments"),
    [
        pytest.param(None, None, {"values.yaml": "a: 1"}, None, [], id="read"),
        pytest.param(
            TENANT,
            NotFound("Secret team-b/x: not found"),
            {},
            MissingSource,
            ["does not exist"],
            id="missing",
        ),
        pytest.param(TENANT, None, {"other": "x"}, MissingSource, ["no key 'values.yaml'"], id="missing-key"),
        pytest.param(
            TENANT,
            Forbidden('secrets "x" is forbidden: User "system:serviceaccount:team-a:deployer" cannot get'),
            {},
            UnreadableSource,
            [
                "Secret x key values.yaml in namespace team-b is forbidden for ServiceAccount team-a/deployer",
                "spec.serviceAccountName",
                "grant that account get on the Secret",
            ],
            id="forbidden-for-the-tenant",
        ),
        pytest.param(
            None,
            Forbidden('secrets "x" is forbidden: User "system:serviceaccount:flux:operator" cannot get'),
            {},
            UnreadableSource,
            ["forbidden for the operator", "system:serviceaccount:flux:operator"],
            id="forbidden-for-the-operator",
        ),
        pytest.param(
            TENANT,
            KubeError("Secret team-b/x: etcdserver: leader changed"),
            {},
            UnreadableSource,
            ["leader"],
            id="api-error-is-not-missing",
        ),
    ],
)
async def test_reading_a_values_source_as_someone(
    identity: str | None,
    failure: KubeError | None,
    data: dict[str, str],
    error: type[Exception] | None,
    fragments: list[str],
) -> None:
    hr = parse_helmrelease(
        {
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"chart": {"repository": "https://c/", "name": "a", "version": "1"}},
        }
    )
    source = SecretKeySelector(name="x", namespace="team-b")
    inputs = Inputs(FakeUrls(), state_dir=Path("/nonexistent"), default_git_ref="main", git_ssh_key=None)
    kube = FakeKube(identity, failure, data)
    if error is None:
        assert await inputs.read_values_source(hr, source, Path("/chart"), kube) == "a: 1"
        return
    with pytest.raises(error) as raised:
        await inputs.read_values_source(hr, source, Path("/chart"), kube)
    assert all(fragment in str(raised.value) for fragment in fragments), str(raised.value)


class FakeUrls:
    """Documents by URL; a URL it does not hold answers as `failures` says (no answer when not listed)."""

    def __init__(
        self, documents: dict[str, str] | None = None, failures: dict[str, int] | None = None
    ) -> None:
        self.documents = documents or {}
        self.failures = failures or {}

    async def read_text(self, url: str) -> str:
        if url in self.documents:
            return self.documents[url]
        if url in self.failures:
            raise WebReadError(url, self.failures[url], f"answered HTTP {self.failures[url]}")
        raise WebReadError(url, None, "Cannot connect to host values.example:443")

    async def close(self) -> None:
        return None


def release_with(values_from: list[dict[str, Any]], values: dict[str, Any] | None = None) -> HelmRelease:
    return parse_helmrelease(
        {
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "chart": {"repository": "https://c/", "name": "a", "version": "1"},
                "valuesFrom": values_from,
                "values": values or {},
            },
        }
    )


URLS = FakeUrls(
    {
        "https://values.example/base.yaml": "replicas: 2\nimage: {tag: '1.0'}\n",
        "https://values.example/bad": "a: [",
    },
    {"https://values.example/gone.yaml": 404},
)


@pytest.mark.parametrize(
    ("url", "optional", "error", "message"),
    [
        pytest.param("https://values.example/gone.yaml", False, MissingSource, "answered HTTP 404", id="404"),
        pytest.param(
            "https://deployer:s3cret@values.example/down.yaml",
            False,
            MissingSource,
            "URL https://***@values.example/down.yaml could not be read: Cannot connect to host",
            id="no-answer-masked",
        ),
        pytest.param("https://values.example/gone.yaml", True, None, "", id="optional-is-skipped"),
        pytest.param(
            "https://values.example/bad",
            False,
            UnparsableSource,
            "bad: expected the node content",
            id="not-yaml",
        ),
    ],
)
async def test_values_from_a_url(
    url: str, optional: bool, error: type[Exception] | None, message: str
) -> None:
    hr = release_with(
        [
            {"externalSourceRef": {"url": "https://values.example/base.yaml"}},
            {"externalSourceRef": {"url": url, "optional": optional}},
        ],
        {"replicas": 3},
    )
    inputs = Inputs(URLS, state_dir=Path("/nonexistent"), default_git_ref="main", git_ssh_key=None)
    kube = FakeKube(None, None, {})
    if error is None:
        values, _ = await inputs.values(hr, Path("/chart"), kube)
        assert values == {"replicas": 3, "image": {"tag": "1.0"}}, "the URL's values under the inline ones"
        return
    with pytest.raises(error) as raised:
        await inputs.values(hr, Path("/chart"), kube)
    assert message in str(raised.value), str(raised.value)
    assert "s3cret" not in str(raised.value)


LAUGHS = "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(LAUGHS, "its YAML aliases expand 28 nodes to 490,329,064", id="billion-laughs"),
        pytest.param("a: &a [1, *a]\n", "refers to itself", id="self-reference"),
    ],
)
@pytest.mark.parametrize("kind", ["configMapKeyRef", "secretKeyRef"])
async def test_values_whose_aliases_never_end_are_refused(kind: str, text: str, message: str) -> None:
    """Refused when read, before the composition or the depth check walks them (which would take hours)."""
    hr = release_with([{kind: {"name": "hostile"}}])
    inputs = Inputs(URLS, state_dir=Path("/nonexistent"), default_git_ref="main", git_ssh_key=None)
    kube = FakeKube(None, None, {"values.yaml": text})
    with pytest.raises(UnparsableSource, match=message):
        await inputs.values(hr, Path("/chart"), kube)
    masker = await inputs.secret_masker(hr, kube)
    assert masker("no secret here") == "no secret here"


async def test_values_from_secrets_are_masked_and_others_are_not() -> None:
    hr = release_with(
        [
            {"secretKeyRef": {"name": "db"}},
            {"externalSourceRef": {"url": "https://values.example/base.yaml"}},
        ]
    )
    inputs = Inputs(URLS, state_dir=Path("/nonexistent"), default_git_ref="main", git_ssh_key=None)
    values, masker = await inputs.values(
        hr, Path("/chart"), FakeKube(None, None, {"values.yaml": "password: hunter22"})
    )
    assert values["password"] == "hunter22"
    assert masker("rejected: password hunter22, replicas 2") == "rejected: password ***, replicas 2"


@pytest.mark.parametrize(
    ("url", "known_hosts", "expected"),
    [
        pytest.param(
            "ssh://git@127.0.0.1:2222/charts.git",
            Path("/etc/known_hosts"),
            SshCredentials(Path("/etc/key"), Path("/etc/known_hosts"), "yes"),
            id="ssh-url-checked-against-known-hosts",
        ),
        pytest.param(
            "git@github.com:org/charts",
            None,
            SshCredentials(Path("/etc/key"), None, "yes"),
            id="scp-like-without-known-hosts-trusts-no-host",
        ),
        pytest.param("https://github.com/org/charts", Path("/etc/known_hosts"), None, id="https-has-no-key"),
    ],
)
async def test_git_charts_over_ssh_use_the_operator_key_and_known_hosts(
    url: str, known_hosts: Path | None, expected: SshCredentials | None
) -> None:
    hr = parse_helmrelease(
        {
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"chart": {"git": url, "path": "charts/app"}},
        }
    )
    inputs = Inputs(
        FakeUrls(),
        state_dir=Path("/nonexistent"),
        default_git_ref="main",
        git_ssh_key=Path("/etc/key"),
        git_known_hosts=known_hosts,
    )
    source = await inputs.chart_source(hr, FakeKube(None, None, {}))
    assert isinstance(source, GitChart)
    assert source.credentials == expected


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        pytest.param(
            NotFound('secrets "pull" not found', 404),
            NotFound,
            "Secret apps/pull (chart.chartPullSecret) does not exist; create it in this HelmRelease's namespace "
            "or fix chart.chartPullSecret.name",
            id="missing-names-the-field",
        ),
        pytest.param(
            Forbidden('secrets "pull" is forbidden', 403),
            Forbidden,
            "Secret apps/pull (chart.chartPullSecret) is forbidden for ServiceAccount team-a/deployer",
            id="forbidden-names-the-account",
        ),
    ],
)
async def test_a_chart_pull_secret_that_cannot_be_read_names_the_field(
    failure: KubeError, error: type[KubeError], message: str
) -> None:
    """A pull secret is a name in the HelmRelease's namespace; one that is not there says which field named it."""
    hr = parse_helmrelease(
        {
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "chart": {
                    "repository": "https://charts.example/",
                    "name": "app",
                    "version": "1.0.0",
                    "chartPullSecret": {"name": "pull"},
                }
            },
        }
    )
    inputs = Inputs(URLS, state_dir=Path("/nonexistent"), default_git_ref="main", git_ssh_key=None)
    with pytest.raises(error) as raised:
        await inputs.chart_source(hr, FakeKube(TENANT, failure, {}))
    assert str(raised.value).startswith(message)
