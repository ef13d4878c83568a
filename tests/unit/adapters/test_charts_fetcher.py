"""ChartFetcher with a scripted helm and a recording git wrapper: credential files, cache, coalescing.

The scripted helm writes a real chart package for `pull` and records, for every call, its argv and the mode and
content of the credential files its environment points at, so the tests see what helm would have seen.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helmrelease.adapters import charts, helm
from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.git import GitError, RefNotFound, RemoteUnreachable, SshCredentials
from helmrelease.adapters.source_errors import InvalidChartSource

FAKE_HELM = """#!{python}
import io, json, os, stat, sys, tarfile, time
from pathlib import Path
here = Path({here!r})
argv = sys.argv[1:]
files = {{}}
for variable in ("HELM_REPOSITORY_CONFIG", "HELM_REGISTRY_CONFIG"):
    path = Path(os.environ.get(variable, "/nonexistent"))
    if path.exists():
        files[variable] = {{"mode": stat.S_IMODE(path.stat().st_mode), "dir_mode": stat.S_IMODE(path.parent.stat().st_mode),
                           "content": path.read_text()}}
with (here / "calls.jsonl").open("a") as log:
    log.write(json.dumps({{"argv": argv, "files": files}}) + "\\n")
if argv[0] == "pull":
    time.sleep(float((here / "pull-delay").read_text()))
    if (here / "pull-error").exists():
        sys.stderr.write((here / "pull-error").read_text())
        sys.exit(1)
    version = argv[argv.index("--version") + 1].lstrip("^~>=v") if "--version" in argv else "0.9.0"
    name = argv[1].rsplit("/", 1)[-1]
    chart = f"apiVersion: v2\\nname: {{name}}\\nversion: {{version}}\\n".encode()
    destination = Path(argv[argv.index("--destination") + 1])
    with tarfile.open(destination / f"{{name}}-{{version}}.tgz", "w:gz") as archive:
        for member, data in ((f"{{name}}/Chart.yaml", chart), (f"{{name}}/templates/cm.yaml", b"kind: ConfigMap\\n")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
"""

RECORDING_GIT = """#!/bin/sh
# Record the credential files git is pointed at, then run the real git.
{{
  echo "argv: $*"
  [ -n "$GIT_ASKPASS" ] && echo "askpass: $(stat -c %a "$GIT_ASKPASS")"
  key=$(printf '%s\\n' "$GIT_SSH_COMMAND" | sed -n "s/.* -i '\\{{0,1\\}}\\([^ ']*\\)'\\{{0,1\\}} .*/\\1/p")
  [ -n "$key" ] && echo "key: $(stat -c %a "$key") $(cat "$key")"
  echo "protocols: $GIT_ALLOW_PROTOCOL"
}} >> {log}
exec {git} "$@"
"""


@dataclass
class Harness:
    directory: Path
    helm_command: helm.HelmCommand
    fetcher: charts.ChartFetcher

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        log = self.directory / "calls.jsonl"
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [entry for entry in entries if command is None or entry["argv"][0] == command]

    def private_leftovers(self) -> list[Path]:
        return list(self.helm_command.settings.temp_root.iterdir())


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    executable = tmp_path / "helm"
    executable.write_text(FAKE_HELM.format(python=sys.executable, here=str(tmp_path)))
    executable.chmod(0o755)
    (tmp_path / "pull-delay").write_text("0")
    settings = helm.HelmSettings(
        home=tmp_path / "home", temp_root=tmp_path / "private", executable=str(executable)
    )
    command = helm.HelmCommand(settings, helm.HelmMajor.V4)
    fetcher_settings = charts.FetcherSettings(
        cache_dir=tmp_path / "cache", plain_http_hosts=frozenset({"insecure.example:5000"})
    )
    return Harness(tmp_path, command, charts.ChartFetcher(command, fetcher_settings))


REPO = "https://charts.example/stable/"
ROBOT = BasicCredentials("robot", "s3cret-password")


async def test_repository_credentials_reach_helm_only_in_a_private_file(harness: Harness) -> None:
    fetched = await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "0.1.0", ROBOT))
    assert (fetched.name, fetched.version, fetched.commit) == ("app", "0.1.0", None)
    assert fetched.source_digest.startswith("sha256:")
    assert (fetched.path / "Chart.yaml").is_file()
    update, pull = harness.calls()
    assert update["argv"][:3] == ["repo", "update", "source"]
    assert pull["argv"][:2] == ["pull", "source/app"]
    for call in (update, pull):
        repositories = call["files"]["HELM_REPOSITORY_CONFIG"]
        assert (repositories["mode"], repositories["dir_mode"]) == (0o600, 0o700)
        assert json.loads(repositories["content"])["repositories"][0]["password"] == "s3cret-password"
        assert "s3cret-password" not in " ".join(call["argv"])
    assert harness.private_leftovers() == []


async def test_oci_credentials_reach_helm_only_in_a_private_registry_config(harness: Harness) -> None:
    await harness.fetcher.fetch(charts.OCIChart("oci://insecure.example:5000/charts/app", "0.2.0", ROBOT))
    await harness.fetcher.fetch(charts.OCIChart("oci://secure.example/charts/app", "0.2.0"))
    with_auth, anonymous = harness.calls("pull")
    registry = with_auth["files"]["HELM_REGISTRY_CONFIG"]
    assert registry["mode"] == 0o600
    assert "insecure.example:5000" in json.loads(registry["content"])["auths"]
    assert "--plain-http" in with_auth["argv"]
    assert "--plain-http" not in anonymous["argv"]
    assert json.loads(anonymous["files"]["HELM_REGISTRY_CONFIG"]["content"]) == {"auths": {}}
    assert harness.private_leftovers() == []


async def test_credential_files_are_removed_when_the_pull_fails(harness: Harness) -> None:
    (harness.directory / "pull-error").write_text(
        'Error: chart "app" version "9.9.9" not found in x repository'
    )
    with pytest.raises(helm.ChartNotFound):
        await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "9.9.9", ROBOT))
    assert harness.private_leftovers() == []
    # nothing half-stored: only the fingerprint key the fetcher keeps beside its entries
    assert [p.name for p in (harness.directory / "cache").iterdir()] == [".credential-salt"]


async def test_an_unchanged_chart_is_not_downloaded_again(harness: Harness) -> None:
    source = charts.RepositoryChart(REPO, "app", "0.1.0")
    first = await harness.fetcher.fetch(source)
    second = await harness.fetcher.fetch(source)
    assert first == second
    assert len(harness.calls("pull")) == 1
    await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "0.2.0"))
    assert len(harness.calls("pull")) == 2


async def test_other_credentials_never_share_a_cached_chart(harness: Harness) -> None:
    """A tenant without the credentials must not read a chart another tenant fetched with them."""
    await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "0.1.0", ROBOT))
    await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "0.1.0"))
    await harness.fetcher.fetch(
        charts.RepositoryChart(REPO, "app", "0.1.0", BasicCredentials("robot", "guess"))
    )
    assert len(harness.calls("pull")) == 3


async def test_a_range_is_resolved_each_time_and_cached_under_its_version(harness: Harness) -> None:
    ranged = await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "^0.3.0"))
    await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "^0.3.0"))
    assert ranged.version == "0.3.0"
    assert len(harness.calls("pull")) == 2
    exact = await harness.fetcher.fetch(charts.RepositoryChart(REPO, "app", "v0.3.0"))
    assert exact == ranged
    assert len(harness.calls("pull")) == 2


async def test_concurrent_fetches_of_one_chart_share_one_download(harness: Harness) -> None:
    (harness.directory / "pull-delay").write_text("0.5")
    source = charts.RepositoryChart(REPO, "app", "0.1.0")
    results = await asyncio.gather(*(harness.fetcher.fetch(source) for _ in range(5)))
    assert len(set(results)) == 1
    assert len(harness.calls("pull")) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_download(harness: Harness) -> None:
    (harness.directory / "pull-delay").write_text("0.5")
    source = charts.RepositoryChart(REPO, "app", "0.1.0")
    impatient = asyncio.create_task(harness.fetcher.fetch(source))
    patient = asyncio.create_task(harness.fetcher.fetch(source))
    await asyncio.sleep(0.2)
    impatient.cancel()
    fetched = await patient
    assert impatient.cancelled()
    assert fetched.version == "0.1.0"
    assert len(harness.calls("pull")) == 1


# ---- git, through a wrapper that records what the real git was given


def git(*args: str, cwd: Path) -> str:
    environment = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=environment, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture
def bare_repository(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository holding a chart at charts/app; returns it and the commit of master."""
    work, bare = tmp_path / "work", tmp_path / "origin.git"
    git("init", "--quiet", "--bare", str(bare), cwd=tmp_path)
    git("init", "--quiet", "--initial-branch=master", str(work), cwd=tmp_path)
    (work / "charts" / "app" / "templates").mkdir(parents=True)
    (work / "charts" / "app" / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    git("add", ".", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "chart", cwd=work)
    git("push", "--quiet", str(bare), "master", cwd=work)
    return bare, git("rev-parse", "HEAD", cwd=work)


def recording_fetcher(harness: Harness, log: Path) -> charts.ChartFetcher:
    wrapper = harness.directory / "git"
    wrapper.write_text(RECORDING_GIT.format(log=shlex.quote(str(log)), git=shutil.which("git")))
    wrapper.chmod(0o755)
    settings = charts.FetcherSettings(
        cache_dir=harness.directory / "git-cache", git_executable=str(wrapper), git_protocols=("file",)
    )
    return charts.ChartFetcher(harness.helm_command, settings)


async def test_git_https_credentials_go_through_a_private_askpass(
    harness: Harness, bare_repository: tuple[Path, str]
) -> None:
    bare, commit = bare_repository
    log = harness.directory / "git.log"
    fetcher = recording_fetcher(harness, log)
    fetched = await fetcher.fetch(charts.GitChart(f"file://{bare}", "master", "charts/app", ROBOT))
    assert (fetched.commit, fetched.source_digest, fetched.name) == (commit, commit, "app")
    recorded = log.read_text()
    assert "askpass: 700" in recorded
    assert "protocols: file" in recorded
    assert "s3cret-password" not in recorded  # neither in argv nor in any file git was pointed at
    assert harness.private_leftovers() == []


async def test_git_ssh_key_is_a_private_copy_removed_afterwards(
    harness: Harness, bare_repository: tuple[Path, str], tmp_path: Path
) -> None:
    bare, _ = bare_repository
    mounted_key = tmp_path / "mounted-key"
    mounted_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n")
    mounted_key.chmod(0o644)  # as a mounted Secret often is, which ssh would refuse
    log = harness.directory / "git.log"
    fetcher = recording_fetcher(harness, log)
    await fetcher.fetch(
        charts.GitChart(f"file://{bare}", "master", "charts/app", SshCredentials(mounted_key))
    )
    assert "key: 600 -----BEGIN OPENSSH PRIVATE KEY-----" in log.read_text()
    assert harness.private_leftovers() == []


async def test_git_transports_are_restricted(harness: Harness, bare_repository: tuple[Path, str]) -> None:
    bare, _ = bare_repository
    with pytest.raises(InvalidChartSource, match="transport 'file' not allowed"):
        await harness.fetcher.fetch(charts.GitChart(f"file://{bare}", "master", "charts/app"))
    assert harness.private_leftovers() == []


@pytest.mark.parametrize(
    ("url", "ref", "git_kind", "source_kind", "message"),
    [
        pytest.param(
            "http://127.0.0.1:1/charts.git",
            "master",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            "git ls-remote failed: unable to access 'http://127.0.0.1:1/charts.git/': Failed to connect",
            id="nothing-listens",
        ),
        pytest.param(
            "file:///nonexistent/charts.git",
            "master",
            RemoteUnreachable,
            helm.RepositoryUnreachable,
            "git ls-remote failed: '/nonexistent/charts.git' does not appear to be a git repository",
            id="no-repository-there",
        ),
        pytest.param(
            "{bare}",
            "nosuch",
            RefNotFound,
            helm.ChartNotFound,
            "git ls-remote failed: no branch or tag 'nosuch' in the repository",
            id="no-such-ref",
        ),
    ],
)
async def test_git_ls_remote_failures_are_classified_once(
    harness: Harness,
    bare_repository: tuple[Path, str],
    url: str,
    ref: str,
    git_kind: type[GitError],
    source_kind: type[helm.HelmError],
    message: str,
) -> None:
    """The git error is the chart source error: a remote we cannot read is never a chart that is not there."""
    settings = charts.FetcherSettings(
        cache_dir=harness.directory / "git-cache", git_protocols=("file", "http")
    )
    fetcher = charts.ChartFetcher(harness.helm_command, settings)
    source = charts.GitChart(url.format(bare=f"file://{bare_repository[0]}"), ref, "charts/app")
    with pytest.raises(git_kind) as raised:
        await fetcher.fetch(source)
    assert isinstance(raised.value, source_kind)
    assert str(raised.value).startswith(message)
    if git_kind is RemoteUnreachable:
        assert not isinstance(raised.value, helm.ChartNotFound)
    assert harness.private_leftovers() == []


async def test_a_missing_git_is_a_chart_fetch_error(
    harness: Harness, bare_repository: tuple[Path, str]
) -> None:
    settings = charts.FetcherSettings(
        cache_dir=harness.directory / "git-cache",
        git_executable=str(harness.directory / "no-git"),
        git_protocols=("file",),
    )
    fetcher = charts.ChartFetcher(harness.helm_command, settings)
    with pytest.raises(
        GitError, match=r"git ls-remote failed: cannot run .*no-git: No such file or directory"
    ):
        await fetcher.fetch(charts.GitChart(f"file://{bare_repository[0]}", "master", "charts/app"))
