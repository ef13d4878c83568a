"""Pure parts of chart fetching: chart paths, git refs, ls-remote, config files, containment, Chart.yaml.

How git failures are classified is one table, for chart fetches and write-back alike: test_git.py.
"""

from __future__ import annotations

import base64
import gzip
import os
import tarfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.adapters import charts, helm
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.source_errors import InvalidChartSource

# ---- chart paths


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("charts/app", "charts/app", id="nested"),
        pytest.param("./charts/app/", "charts/app", id="dot-and-trailing-slash"),
        pytest.param("", ".", id="empty-is-the-root"),
        pytest.param(".", ".", id="root"),
        pytest.param("charts/..app", "charts/..app", id="dots-inside-a-name"),
    ],
)
def test_chart_paths_inside_the_repository(path: str, expected: str) -> None:
    assert charts.chart_subpath(path) == PurePosixPath(expected)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("../other", id="parent"),
        pytest.param("charts/../../etc", id="parent-in-the-middle"),
        pytest.param("/etc", id="absolute"),
        pytest.param("charts/app/..", id="trailing-parent"),
        pytest.param("charts\0/app", id="nul"),
    ],
)
def test_chart_paths_that_escape_are_refused(path: str) -> None:
    with pytest.raises(InvalidChartSource, match="stay inside the repository"):
        charts.chart_subpath(path)


SEGMENT = st.text(alphabet="abc.-_", min_size=1, max_size=5)


@given(st.lists(SEGMENT, max_size=4), st.lists(SEGMENT, max_size=4))
def test_any_parent_segment_is_refused(before: list[str], after: list[str]) -> None:
    with pytest.raises(InvalidChartSource):
        charts.chart_subpath("/".join([*before, "..", *after]))


@given(st.lists(SEGMENT.filter(lambda s: s != ".."), max_size=6))
def test_relative_paths_without_parents_are_kept(segments: list[str]) -> None:
    subpath = charts.chart_subpath("/".join(segments))
    assert not subpath.is_absolute()
    assert ".." not in subpath.parts


# ---- git refs


@pytest.mark.parametrize("ref", ["master", "release/1.x", "v1.2.3", "refs/heads/main", "a" * 40])
def test_git_refs_accepted(ref: str) -> None:
    assert charts.validate_git_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("--upload-pack=touch /tmp/x", id="option"),
        pytest.param("+refs/heads/*:refs/heads/*", id="refspec"),
        pytest.param("master:other", id="colon"),
        pytest.param("a..b", id="range"),
        pytest.param("HEAD^", id="caret"),
        pytest.param("", id="empty"),
        pytest.param("with space", id="space"),
    ],
)
def test_git_refs_refused(ref: str) -> None:
    with pytest.raises(InvalidChartSource, match="not a branch, tag or commit"):
        charts.validate_git_ref(ref)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("25fca03f973ae52e0fd7351660730d6a7d43d53c", True, id="sha1"),
        pytest.param("a" * 64, True, id="sha256"),
        pytest.param("25fca03", False, id="abbreviated"),
        pytest.param("master", False, id="branch"),
        pytest.param("A" * 40, False, id="uppercase"),
    ],
)
def test_commits(ref: str, expected: bool) -> None:
    assert charts.is_commit(ref) is expected


LS_REMOTE = """25fca03f973ae52e0fd7351660730d6a7d43d53c\trefs/heads/master
1111111111111111111111111111111111111111\trefs/heads/feature/master
fba406bbb587c40e93f8e18c4f562370942b8a2c\trefs/tags/v1a
8d56a1c8e96afc5859f59d37ac93ad371b42b874\trefs/tags/v1a^{}
2222222222222222222222222222222222222222\trefs/tags/v1
3333333333333333333333333333333333333333\trefs/tags/both
4444444444444444444444444444444444444444\trefs/heads/both
"""


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("master", "25fca03f973ae52e0fd7351660730d6a7d43d53c", id="branch-not-its-suffix-twin"),
        pytest.param("v1a", "8d56a1c8e96afc5859f59d37ac93ad371b42b874", id="annotated-tag-peeled"),
        pytest.param("v1", "2222222222222222222222222222222222222222", id="lightweight-tag"),
        pytest.param("both", "4444444444444444444444444444444444444444", id="branch-before-tag"),
        pytest.param("refs/heads/feature/master", "1111111111111111111111111111111111111111", id="full-ref"),
        pytest.param("nosuch", None, id="missing"),
        pytest.param("feature", None, id="prefix-is-not-a-match"),
    ],
)
def test_resolve_ref(ref: str, expected: str | None) -> None:
    assert charts.resolve_ref(LS_REMOTE, ref) == expected


@given(
    st.text(alphabet="abcxyz/", min_size=1, max_size=12), st.text(alphabet="abcxyz", min_size=1, max_size=6)
)
def test_resolve_ref_never_matches_by_suffix(ref: str, prefix: str) -> None:
    listing = f"{'1' * 40}\trefs/heads/{prefix}/{ref}\n"
    assert charts.resolve_ref(listing, ref) is None


# ---- config files


def test_repositories_file_carries_credentials_and_ca() -> None:
    config = charts.repositories_file(
        "https://charts.example/stable/", BasicCredentials("robot", "s3cret"), Path("/etc/ca.pem")
    )
    assert config["repositories"] == [
        {
            "name": "source",
            "url": "https://charts.example/stable",
            "username": "robot",
            "password": "s3cret",
            "caFile": "/etc/ca.pem",
        }
    ]
    assert charts.repositories_file("https://c/", None, None)["repositories"] == [
        {"name": "source", "url": "https://c"}
    ]


def test_registry_config() -> None:
    token = base64.b64encode(b"robot:s3cret").decode()
    assert charts.registry_config("r.example:5000", BasicCredentials("robot", "s3cret")) == {
        "auths": {"r.example:5000": {"auth": token}}
    }
    assert charts.registry_config("r.example", None) == {"auths": {}}
    assert charts.oci_host("oci://r.example:5000/charts/app") == "r.example:5000"


@pytest.mark.parametrize(
    ("version", "exact"),
    [
        ("1.2.3", True),
        ("v1.2.3", True),
        ("1.2.3-rc.1+build", True),
        ("^1.2", False),
        (">=1.0.0", False),
        ("", False),
    ],
)
def test_exact_versions(version: str, exact: bool) -> None:
    assert charts.is_exact_version(version) is exact


# ---- chart directories on disk


def make_chart(directory: Path, chart_yaml: str = "apiVersion: v2\nname: app\nversion: 0.1.0\n") -> Path:
    directory.mkdir(parents=True)
    (directory / "Chart.yaml").write_text(chart_yaml)
    (directory / "templates").mkdir()
    return directory


def test_chart_directory_inside_the_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    chart = make_chart(checkout / "charts" / "app")
    (chart / "templates" / "shared.yaml").symlink_to(checkout / "charts")  # inside: allowed
    assert charts.contained_chart_directory(checkout, PurePosixPath("charts/app")) == chart.resolve()


@pytest.mark.parametrize(
    ("link", "target", "subpath"),
    [
        pytest.param("charts/app/templates/passwd.yaml", "/etc/passwd", "charts/app", id="file-symlink-out"),
        pytest.param("charts/app/templates/host", "/etc", "charts/app", id="directory-symlink-out"),
        pytest.param("charts/link", "{outside}", "charts/link", id="chart-path-through-a-symlink"),
        pytest.param(
            "charts/app/values.yaml", "../../../secret.yaml", "charts/app", id="relative-symlink-out"
        ),
    ],
)
def test_symlinks_leading_out_are_refused(tmp_path: Path, link: str, target: str, subpath: str) -> None:
    checkout = tmp_path / "checkout"
    make_chart(checkout / "charts" / "app")
    outside = make_chart(tmp_path / "outside")
    (tmp_path / "secret.yaml").write_text("password: x\n")
    (checkout / link).symlink_to(target.format(outside=outside))
    with pytest.raises(InvalidChartSource, match="outside the repository"):
        charts.contained_chart_directory(checkout, PurePosixPath(subpath))


def test_a_missing_chart_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(helm.ChartNotFound, match="not a directory"):
        charts.contained_chart_directory(tmp_path, PurePosixPath("charts/none"))


@pytest.mark.parametrize(
    ("chart_yaml", "error", "message"),
    [
        pytest.param(None, helm.ChartNotFound, "no Chart.yaml", id="missing"),
        pytest.param("name: [unclosed", InvalidChartSource, "not valid YAML", id="invalid-yaml"),
        pytest.param(
            "apiVersion: v2\nname: app\n", InvalidChartSource, "no name or version", id="no-version"
        ),
        pytest.param(
            "version: 1.0.0\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))
            + "name: *a8\n",
            InvalidChartSource,
            "aliases expand",
            id="billion-laughs-as-name",
        ),
    ],
)
def test_unusable_chart_yaml(
    tmp_path: Path, chart_yaml: str | None, error: type[Exception], message: str
) -> None:
    if chart_yaml is not None:
        (tmp_path / "Chart.yaml").write_text(chart_yaml)
    with pytest.raises(error, match=message):
        charts.read_chart_yaml(tmp_path)


@pytest.mark.parametrize(
    ("chart_yaml", "requirements", "expected"),
    [
        pytest.param("apiVersion: v2\nname: a\nversion: 1.0.0\n", False, False, id="none"),
        pytest.param(
            "apiVersion: v2\nname: a\nversion: 1.0.0\ndependencies:\n- name: b\n  version: 1.0.0\n"
            "  repository: https://charts.example\n",
            False,
            True,
            id="v2-dependencies",
        ),
        pytest.param("apiVersion: v1\nname: a\nversion: 1.0.0\n", True, True, id="v1-requirements"),
    ],
)
def test_declared_dependencies(tmp_path: Path, chart_yaml: str, requirements: bool, expected: bool) -> None:
    (tmp_path / "Chart.yaml").write_text(chart_yaml)
    if requirements:
        (tmp_path / "requirements.yaml").write_text("dependencies: []\n")
    assert charts.read_chart_yaml(tmp_path) == charts.ChartMetadata("a", "1.0.0", expected)


def test_revision_is_the_commit_for_git_and_the_version_otherwise() -> None:
    packaged = charts.FetchedChart(Path("/c"), "app", "0.2.0", "sha256:ab")
    from_git = charts.FetchedChart(Path("/c"), "app", "0.1.0", "25fca03f" * 5, "25fca03f" * 5)
    assert (packaged.revision, from_git.revision) == ("0.2.0", "25fca03f" * 5)


def test_cache_keys_differ_per_part() -> None:
    assert charts.cache_key("git", "u", "a") != charts.cache_key("git", "u", "b")
    assert charts.cache_key("a", "bc") != charts.cache_key("ab", "c")
    assert len(charts.cache_key("x")) == 40
    assert os.sep not in charts.cache_key("x")


def test_credential_salt_survives_a_restart_and_stays_private(tmp_path: Path) -> None:
    from helmrelease.adapters.charts import credential_salt

    first = credential_salt(tmp_path / "charts")
    assert len(first) == 32
    assert credential_salt(tmp_path / "charts") == first  # a restarted operator finds its cache again
    salt_file = tmp_path / "charts" / ".credential-salt"
    assert salt_file.stat().st_mode & 0o777 == 0o600
    salt_file.write_bytes(b"short")
    replaced = credential_salt(tmp_path / "charts")
    assert len(replaced) == 32
    assert replaced != first


def test_prune_cache_drops_least_recently_used_but_never_a_chart_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helmrelease.adapters import charts

    now = 1_000_000.0
    ages = {"old": 7200, "older": 9000, "recent": 60, "fresh": 0, "middle": 3600}
    for name, age in ages.items():
        entry = tmp_path / name
        entry.mkdir()
        os.utime(entry, (now - age, now - age))
    (tmp_path / ".staging-x").mkdir()
    (tmp_path / ".credential-salt").write_bytes(b"x" * 32)
    monkeypatch.setattr(charts.time, "time", lambda: now)

    assert sorted(p.name for p in charts.prune_cache(tmp_path, keep=3, min_idle=600)) == ["old", "older"]
    # keep=1 would drop "recent" as well, but it was used 60 s ago (a helm command may be reading it): it stays.
    assert [p.name for p in charts.prune_cache(tmp_path, keep=1, min_idle=600)] == ["middle"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".credential-salt", ".staging-x", "fresh", "recent"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"<html><body>502 Bad Gateway</body></html>\n", id="an-error-page"),
        pytest.param(b"", id="empty"),
        pytest.param(gzip.compress(b"not a tar archive at all" * 100), id="gzip-of-no-tar"),
        pytest.param(None, id="truncated"),
    ],
)
def test_a_package_that_is_not_a_chart_archive_is_refused(tmp_path: Path, content: bytes | None) -> None:
    """helm pull keeps whatever the server sent: the unpacking says what it is, not a traceback."""
    package = tmp_path / "app-0.1.0.tgz"
    if content is None:
        whole = tmp_path / "whole.tgz"
        (tmp_path / "src" / "app").mkdir(parents=True)
        (tmp_path / "src" / "app" / "Chart.yaml").write_text("name: app\nversion: 0.1.0\n")
        (tmp_path / "src" / "app" / "values.yaml").write_bytes(os.urandom(64 * 1024))
        with tarfile.open(whole, "w:gz") as archive:
            archive.add(tmp_path / "src" / "app", arcname="app")
        content = whole.read_bytes()[: len(whole.read_bytes()) // 2]
    package.write_bytes(content)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(
        InvalidChartSource, match=r"app-0\.1\.0\.tgz is not a chart package \(a gzip-compressed tar"
    ):
        charts._unpack(package, staging)
