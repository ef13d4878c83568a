"""Fetching charts for real: Helm repositories (with basic auth), OCI registries (with auth), git over file:// and
over smart HTTP with basic auth (git http-backend), through the real helm v4 and v3 binaries and git.

helm and git run through tiny recording wrappers, so a test can tell a cache hit (no download) from a fetch.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes import client as k8s
from tests.support import charts as charts_support
from tests.support.charts import CHARTS_DIR, ChartRepository
from tests.support.helmtool import Helm
from tests.support.registry import Registry

from helmrelease.adapters import charts, helm
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.git import AuthFailed, RemoteUnreachable
from helmrelease.adapters.source_errors import InvalidChartSource

ROBOT = BasicCredentials("robot", "s3cret-robot")
RECORDING_WRAPPER = '#!/bin/sh\necho "$*" >> {log}\nexec {program} "$@"\n'


@dataclass
class Sources:
    """A fetcher over one real helm binary, with helm's and git's invocations recorded."""

    adapter: helm.HelmCommand
    fetcher: charts.ChartFetcher
    helm_log: Path
    git_log: Path

    def helm_calls(self, command: str) -> list[str]:
        lines = self.helm_log.read_text().splitlines() if self.helm_log.exists() else []
        return [line for line in lines if line.split(" ", 1)[0] == command]

    def git_calls(self, command: str) -> list[str]:
        lines = self.git_log.read_text().splitlines() if self.git_log.exists() else []
        return [line for line in lines if command in line.split(" ")[:3]]


def recording(program: str, log: Path, wrapper: Path) -> str:
    wrapper.write_text(RECORDING_WRAPPER.format(log=shlex.quote(str(log)), program=shlex.quote(program)))
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(params=["v4", "v3"])
async def sources(request: pytest.FixtureRequest, tmp_path: Path, registry: Registry) -> Iterator[Sources]:
    tool: Helm = request.getfixturevalue("helm" if request.param == "v4" else "helm3")
    helm_log, git_log = tmp_path / "helm.log", tmp_path / "git.log"
    settings = helm.HelmSettings(
        home=tool.home,
        temp_root=tmp_path / "private",
        executable=recording(tool.executable, helm_log, tmp_path / "helm"),
        kubeconfig=tool.kubeconfig,
    )
    adapter = await helm.HelmCommand.detect(settings)
    fetcher_settings = charts.FetcherSettings(
        cache_dir=tmp_path / "cache",
        deadline=120,
        plain_http_hosts=frozenset({registry.host}),
        git_executable=recording(shutil.which("git") or "git", git_log, tmp_path / "git"),
        git_protocols=("file", "http"),
    )
    yield Sources(adapter, charts.ChartFetcher(adapter, fetcher_settings), helm_log, git_log)
    assert list(settings.temp_root.iterdir()) == [], "private files left behind"
    assert list(fetcher_settings.cache_dir.glob(".staging-*")) == [], "half-stored chart left in the cache"


# ---- Helm repositories


async def test_a_repository_chart_is_downloaded_once(sources: Sources, chart_repo: ChartRepository) -> None:
    first = await sources.fetcher.fetch(charts.RepositoryChart(chart_repo.url, "app", "0.2.0"))
    again = await sources.fetcher.fetch(charts.RepositoryChart(chart_repo.url.rstrip("/"), "app", "0.2.0"))
    assert first == again
    assert (first.name, first.version) == ("app", "0.2.0")
    assert "version: 0.2.0" in (first.path / "Chart.yaml").read_text()
    assert len(sources.helm_calls("pull")) == 1

    older = await sources.fetcher.fetch(charts.RepositoryChart(chart_repo.url, "app", "0.1.0"))
    assert older.version == "0.1.0"
    assert older.source_digest != first.source_digest
    assert len(sources.helm_calls("pull")) == 2


async def test_a_missing_chart_or_version(sources: Sources, chart_repo: ChartRepository) -> None:
    with pytest.raises(helm.ChartNotFound, match=r"no chart version found for app-9\.9\.9"):
        await sources.fetcher.fetch(charts.RepositoryChart(chart_repo.url, "app", "9.9.9"))
    with pytest.raises(helm.ChartNotFound, match="no chart name found"):
        await sources.fetcher.fetch(charts.RepositoryChart(chart_repo.url, "nope", "0.1.0"))
    with pytest.raises(helm.RepositoryUnreachable, match="connection refused"):
        await sources.fetcher.fetch(charts.RepositoryChart("http://127.0.0.1:1/", "app", "0.1.0"))


@pytest.fixture(scope="module")
def auth_chart_repo(helm: Helm, workdir: Path) -> Iterator[ChartRepository]:
    repo = charts_support.serve_repository(
        helm, workdir / "chart-repo-auth", username=ROBOT.username, password=ROBOT.password
    )
    yield repo
    repo.stop()


@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        pytest.param(ROBOT, None, id="right-credentials"),
        pytest.param(None, helm.Unauthorized, id="no-credentials"),
        pytest.param(BasicCredentials("robot", "guess"), helm.Unauthorized, id="wrong-password"),
    ],
)
async def test_a_repository_behind_basic_auth(
    sources: Sources,
    auth_chart_repo: ChartRepository,
    credentials: BasicCredentials | None,
    error: type[helm.HelmError] | None,
) -> None:
    source = charts.RepositoryChart(auth_chart_repo.url, "tested", "0.1.0", credentials)
    if error is None:
        assert (await sources.fetcher.fetch(source)).name == "tested"
    else:
        with pytest.raises(error, match="401 Unauthorized"):
            await sources.fetcher.fetch(source)
    assert all(ROBOT.password not in call for call in sources.helm_calls("pull") + sources.helm_calls("repo"))


# ---- OCI registries


async def test_an_oci_chart(sources: Sources, oci_charts: str) -> None:
    fetched = await sources.fetcher.fetch(charts.OCIChart(f"{oci_charts}/tested", "0.2.0"))
    assert (fetched.name, fetched.version) == ("tested", "0.2.0")
    await sources.fetcher.fetch(charts.OCIChart(f"{oci_charts}/tested", "0.2.0"))
    assert len(sources.helm_calls("pull")) == 1
    assert "--plain-http" in sources.helm_calls("pull")[0]
    with pytest.raises(helm.ChartNotFound, match="not found"):
        await sources.fetcher.fetch(charts.OCIChart(f"{oci_charts}/tested", "9.9.9"))


@pytest.fixture(scope="module")
def auth_oci_charts(helm: Helm, auth_registry: Registry, chart_repo: ChartRepository) -> str:
    return charts_support.push_oci_charts(helm, auth_registry, chart_repo.directory)


async def test_an_oci_chart_behind_auth(
    sources: Sources, auth_registry: Registry, auth_oci_charts: str, tmp_path: Path
) -> None:
    assert auth_registry.auth is not None
    fetcher = charts.ChartFetcher(
        sources.adapter,
        charts.FetcherSettings(
            cache_dir=tmp_path / "auth-cache", plain_http_hosts=frozenset({auth_registry.host})
        ),
    )
    reference = f"{auth_oci_charts}/app"
    right = BasicCredentials(*auth_registry.auth)
    assert (await fetcher.fetch(charts.OCIChart(reference, "0.1.0", right))).version == "0.1.0"
    with pytest.raises(helm.Unauthorized):
        await fetcher.fetch(charts.OCIChart(reference, "0.1.0"))
    with pytest.raises(helm.Unauthorized):
        await fetcher.fetch(charts.OCIChart(reference, "0.1.0", BasicCredentials(right.username, "guess")))


# ---- git


def git(*args: str, cwd: Path) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(cwd),
    }
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    result = subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@dataclass
class Remote:
    """A bare repository and a working clone to push commits from."""

    bare: Path
    work: Path

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, message: str) -> str:
        git("add", "--all", ".", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", "HEAD:master", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """tests/charts/app at charts/app of a fresh bare repository, tagged v1."""
    bare, work = tmp_path / "remote" / "charts.git", tmp_path / "remote" / "work"
    bare.mkdir(parents=True)
    git("init", "--quiet", "--bare", str(bare), cwd=bare.parent)
    git("clone", "--quiet", str(bare), str(work), cwd=bare.parent)
    shutil.copytree(CHARTS_DIR / "app", work / "charts" / "app")
    repository = Remote(bare, work)
    repository.commit("app chart")
    git("tag", "-a", "v1", "-m", "first release", cwd=work)
    git("push", "--quiet", "origin", "v1", cwd=work)
    return repository


async def test_a_git_chart_is_checked_out_once_per_commit(sources: Sources, remote: Remote) -> None:
    first_commit = git("rev-parse", "HEAD", cwd=remote.work)
    source = charts.GitChart(remote.url, "master", "charts/app")
    first = await sources.fetcher.fetch(source)
    assert (first.name, first.commit, first.source_digest, first.revision) == ("app", *[first_commit] * 3)
    assert (first.path / "templates" / "deployment.yaml").is_file()
    assert not (first.path.parent.parent / ".git").exists()

    assert await sources.fetcher.fetch(source) == first
    assert len(sources.git_calls("fetch")) == 1  # the second time only ls-remote ran
    assert len(sources.git_calls("ls-remote")) == 2

    (remote.work / "charts" / "app" / "values.yaml").write_text("message: changed\n", encoding="utf-8")
    second_commit = remote.commit("change values")
    second = await sources.fetcher.fetch(source)
    assert second.commit == second_commit != first_commit
    assert (second.path / "values.yaml").read_text() == "message: changed\n"
    assert len(sources.git_calls("fetch")) == 2


@pytest.mark.parametrize("ref", ["v1", "first-commit"])
async def test_git_refs_tags_and_commits(sources: Sources, remote: Remote, ref: str) -> None:
    first_commit = git("rev-parse", "HEAD", cwd=remote.work)
    (remote.work / "charts" / "app" / "values.yaml").write_text("message: later\n")
    remote.commit("later")
    fetched = await sources.fetcher.fetch(
        charts.GitChart(remote.url, first_commit if ref == "first-commit" else ref, "charts/app")
    )
    assert fetched.commit == first_commit  # an annotated tag resolves to its commit
    assert "message: later" not in (fetched.path / "values.yaml").read_text()


@pytest.mark.parametrize(
    ("ref", "path", "error", "message"),
    [
        pytest.param("master", "../../etc", InvalidChartSource, "stay inside", id="parent-path"),
        pytest.param("master", "/etc", InvalidChartSource, "stay inside", id="absolute-path"),
        pytest.param(
            "--upload-pack=touch", "charts/app", InvalidChartSource, "not a branch", id="option-ref"
        ),
        pytest.param("nosuch", "charts/app", helm.ChartNotFound, "no branch or tag", id="missing-ref"),
        pytest.param("master", "charts/none", helm.ChartNotFound, "not a directory", id="missing-path"),
    ],
)
async def test_git_sources_refused_or_missing(
    sources: Sources, remote: Remote, ref: str, path: str, error: type[helm.HelmError], message: str
) -> None:
    with pytest.raises(error, match=message):
        await sources.fetcher.fetch(charts.GitChart(remote.url, ref, path))
    if error is InvalidChartSource:
        assert sources.git_calls("ls-remote") == []  # refused before git ran at all


@pytest.mark.parametrize(
    ("link", "target", "path"),
    [
        pytest.param("charts/app/templates/passwd.yaml", "/etc/passwd", "charts/app", id="file-symlink-out"),
        pytest.param("charts/escape", "/etc", "charts/escape", id="chart-path-is-a-symlink-out"),
        pytest.param("charts/app/values.yaml", "../../../../outside.yaml", "charts/app", id="relative-out"),
    ],
)
async def test_git_symlinks_leading_out_are_refused(
    sources: Sources, remote: Remote, link: str, target: str, path: str
) -> None:
    destination = remote.work / link
    destination.unlink(missing_ok=True)
    destination.symlink_to(target)
    remote.commit("escape")
    with pytest.raises(InvalidChartSource, match="outside the repository"):
        await sources.fetcher.fetch(charts.GitChart(remote.url, "master", path))


async def test_git_dependencies_are_vendored_unless_skipped(
    sources: Sources, remote: Remote, chart_repo: ChartRepository
) -> None:
    chart_yaml = remote.work / "charts" / "app" / "Chart.yaml"
    chart_yaml.write_text(
        chart_yaml.read_text()
        + f"dependencies:\n  - name: tested\n    version: 0.1.0\n    repository: {chart_repo.url.rstrip('/')}\n"
    )
    remote.commit("depend on tested")
    vendored = await sources.fetcher.fetch(charts.GitChart(remote.url, "master", "charts/app"))
    assert [p.name for p in (vendored.path / "charts").glob("*.tgz")] == ["tested-0.1.0.tgz"]
    skipped = await sources.fetcher.fetch(
        charts.GitChart(remote.url, "master", "charts/app", skip_dependency_update=True)
    )
    assert not (skipped.path / "charts").exists()


async def test_a_git_chart_installs(
    sources: Sources, remote: Remote, namespace: str, api_client: k8s.ApiClient
) -> None:
    fetched = await sources.fetcher.fetch(charts.GitChart(remote.url, "v1", "charts/app"))
    release = await sources.adapter.upgrade_install(
        "from-git", namespace, fetched.path, {}, helm.DeployOptions(), action=helm.DeployAction.INSTALL
    )
    assert (release.status, release.chart_name) == ("deployed", "app")
    assert (
        k8s.CoreV1Api(api_client).read_namespaced_config_map("from-git", namespace).data["message"] == "hello"
    )


# ---- git over smart HTTP with basic auth


class _GitHttpBackend(BaseHTTPRequestHandler):
    """git's smart HTTP protocol through `git http-backend` (CGI), behind HTTP basic auth."""

    root: Path
    authorization: str

    def _serve(self) -> None:
        if self.headers.get("Authorization") != self.authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        cgi = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_USER": "robot",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        body = self.rfile.read(length) if length else b""
        output = subprocess.run(
            ["git", "http-backend"], input=body, env=cgi, capture_output=True, check=False
        ).stdout
        head, _, payload = output.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_remote(remote: Remote) -> Iterator[str]:
    """The remote served over http://127.0.0.1 by git http-backend, for ROBOT only; returns its URL."""
    token = base64.b64encode(f"{ROBOT.username}:{ROBOT.password}".encode()).decode()
    handler = type(
        "Handler", (_GitHttpBackend,), {"root": remote.bare.parent, "authorization": f"Basic {token}"}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{remote.bare.name}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        pytest.param(ROBOT, None, id="right-credentials"),
        pytest.param(None, helm.Unauthorized, id="no-credentials"),
        pytest.param(BasicCredentials("robot", "guess"), helm.Unauthorized, id="wrong-password"),
    ],
)
async def test_git_over_http_with_basic_auth(
    sources: Sources,
    http_remote: str,
    credentials: BasicCredentials | None,
    error: type[helm.HelmError] | None,
) -> None:
    source = charts.GitChart(http_remote, "master", "charts/app", credentials)
    if error is None:
        assert (await sources.fetcher.fetch(source)).name == "app"
    else:
        with pytest.raises(error) as failure:
            await sources.fetcher.fetch(source)
        assert "guess" not in str(failure.value)
        # git's own error, raised by the first command (ls-remote), is the chart source error: mapped once.
        assert isinstance(failure.value, AuthFailed)
        assert not isinstance(failure.value, helm.ChartNotFound)
        assert str(failure.value).startswith("git ls-remote failed: ")
    assert ROBOT.password not in sources.git_log.read_text()  # never on a git command line


async def test_git_over_http_from_a_server_that_is_gone(sources: Sources) -> None:
    """A remote nobody answers for is unreachable, not a chart that does not exist."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/charts.git"
    with pytest.raises(helm.RepositoryUnreachable) as failure:
        await sources.fetcher.fetch(charts.GitChart(url, "master", "charts/app", ROBOT))
    assert isinstance(failure.value, RemoteUnreachable)
    assert not isinstance(failure.value, helm.ChartNotFound)
    assert str(failure.value).startswith(
        f"git ls-remote failed: unable to access '{url}/': Failed to connect"
    )
    assert sources.git_calls("fetch") == []
