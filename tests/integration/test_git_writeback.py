"""Git write-back against a real bare repository on disk: one commit per change, redone after a racing push.

No cluster is needed. The "other user" is a second clone pushing with plain git; it pushes from inside our
edit, which runs after our fetch and before our push, so the race is certain rather than timed.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from helmrelease.adapters.credentials import BasicCredentials
from helmrelease.adapters.files import manifest_files
from helmrelease.adapters.git import (
    DEFAULT_AUTHOR,
    Author,
    ChangedFile,
    GitError,
    GitRemote,
    GitRepository,
    ImageUpdate,
    ManifestEdit,
    PushRejected,
    RefNotFound,
    RemoteUnreachable,
    commit_message,
    git_environment,
)

RELEASES = "clusters/prod/monitoring.yaml"
OTHER = "clusters/prod/apps.yaml"
SEED = {
    RELEASES: """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: prom
  namespace: monitoring
  annotations:
    fluxcd.io/automated: "true"
spec:
  releaseName: prom
  chart:
    repository: https://charts.example.com
    name: prometheus
    version: 11.0.0
  values:
    replicas: 1
    image:
      repository: prom/prometheus
      tag: v2.3.1
---
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: grafana
  namespace: monitoring
spec:
  chart:
    repository: https://charts.example.com
    name: grafana
    version: 5.0.0
  values:
    image:
      repository: grafana/grafana
      tag: 7.0.0
""",
    OTHER: """\
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata:
  name: web
  namespace: apps
spec:
  chart:
    repository: https://charts.example.com
    name: web
    version: 1.0.0
""",
    "notes.txt": "not a manifest, so never edited, though it holds the line:\n      tag: v2.3.1\n",
}
OLD_TAG_LINE = "      tag: v2.3.1"
NEW_TAG_LINE = "      tag: v2.3.2"
UPDATE = ImageUpdate("monitoring", "prom", "prometheus", "prom/prometheus", "v2.3.1", "v2.3.2", "semver:~2.3")
SOMEONE = Author("Someone Else", "someone@example.com")


def _plain_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": SOMEONE.name,
        "GIT_AUTHOR_EMAIL": SOMEONE.email,
        "GIT_COMMITTER_NAME": SOMEONE.name,
        "GIT_COMMITTER_EMAIL": SOMEONE.email,
    }


def _git(args: Sequence[str], *, cwd: Path | None, env: Mapping[str, str], stdin: str | None = None) -> str:
    """Plain git, the way another user or an inspector runs it; fails the test on a non-zero exit."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=True
    )
    return result.stdout


@dataclass(frozen=True)
class Remote:
    """A bare repository and the plain-git operations the tests use to act as other users and inspect it."""

    bare: Path
    scratch: Path

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return _git(args, cwd=cwd or self.bare, env=_plain_env(self.scratch))

    def push_change(self, path: str, old: str, new: str, clone_name: str = "other") -> None:
        """Another user's commit: clone, replace one line, push."""
        clone = self.scratch / clone_name
        if not clone.exists():
            self.git("clone", "--quiet", self.url, str(clone), cwd=self.scratch)
        self.git("pull", "--quiet", "--ff-only", cwd=clone)
        target = clone / path
        text = target.read_text()
        assert old in text
        target.write_text(text.replace(old, new))
        self.git("commit", "--quiet", "-am", f"change {path}", cwd=clone)
        self.git("push", "--quiet", "origin", "HEAD:main", cwd=clone)

    def head(self) -> str:
        return self.git("rev-parse", "main").strip()

    def count(self) -> int:
        return int(self.git("rev-list", "--count", "main"))

    def show(self, path: str, rev: str = "main") -> str:
        return self.git("show", f"{rev}:{path}")

    def changed_lines(self, rev: str = "main") -> list[str]:
        """The added and removed lines of one commit, from a zero-context diff."""
        diff = self.git("diff", "-U0", f"{rev}~1", rev)
        return [
            line
            for line in diff.splitlines()
            if line[:1] in ("+", "-") and not line.startswith(("+++", "---"))
        ]


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    bare = tmp_path / "remote.git"
    origin = Remote(bare, scratch)
    origin.git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    seed = scratch / "seed"
    origin.git("clone", "--quiet", origin.url, str(seed), cwd=scratch)
    for path, text in SEED.items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_text(text)
    origin.git("add", ".", cwd=seed)
    origin.git("commit", "--quiet", "-m", "seed", cwd=seed)
    origin.git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    return origin


def _repository(remote: Remote, state: Path, push_attempts: int = 4) -> GitRepository:
    return GitRepository(
        GitRemote(remote.url, "main"),
        state,
        push_attempts=push_attempts,
        backoff_initial=0.01,
        backoff_max=0.05,
    )


@pytest.fixture
def repository(remote: Remote, tmp_path: Path) -> GitRepository:
    return _repository(remote, tmp_path / "state")


def replace_line(old: str, new: str) -> ManifestEdit:
    """An edit that replaces one line in every manifest holding it, found afresh on each tree it is given."""

    def edit(root: Path) -> list[ChangedFile]:
        return [
            ChangedFile(file.relative_to(root).as_posix(), file.read_text().replace(old, new))
            for file in manifest_files(root)
            if old in file.read_text().splitlines()
        ]

    return edit


def racing(edit: ManifestEdit, others: Callable[[int], None]) -> tuple[ManifestEdit, list[int]]:
    """``edit``, after letting another user push (``others(call)``) between our fetch and our push."""
    calls: list[int] = []

    def wrapped(root: Path) -> list[ChangedFile]:
        calls.append(len(calls) + 1)
        others(len(calls))
        return list(edit(root))

    return wrapped, calls


@pytest.mark.parametrize(
    "author",
    [pytest.param(DEFAULT_AUTHOR, id="default-author"), pytest.param(SOMEONE, id="given-author")],
)
async def test_pushes_one_commit_with_the_one_line_change(
    remote: Remote, repository: GitRepository, author: Author
) -> None:
    before = remote.head()
    result = await repository.apply_change(
        replace_line(OLD_TAG_LINE, NEW_TAG_LINE), commit_message([UPDATE]), author
    )

    assert result is not None
    assert (result.sha, result.branch, result.files, result.push_attempts) == (
        remote.head(),
        "main",
        (RELEASES,),
        1,
    )
    assert remote.count() == 2
    assert remote.git("rev-parse", "main~1").strip() == before
    assert remote.changed_lines() == [f"-{OLD_TAG_LINE}", f"+{NEW_TAG_LINE}"]
    assert remote.git("diff", "--numstat", "main~1", "main").split() == ["1", "1", RELEASES]
    assert remote.git("log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == f"{author}|{author}"
    assert remote.git("log", "-1", "--format=%B").strip() == commit_message([UPDATE])


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(replace_line(OLD_TAG_LINE, OLD_TAG_LINE), id="same-text"),
        pytest.param(replace_line("      tag: not-there", NEW_TAG_LINE), id="no-matching-file"),
        pytest.param(lambda root: [], id="no-files"),
    ],
)
async def test_no_change_means_no_commit(
    remote: Remote, repository: GitRepository, edit: ManifestEdit
) -> None:
    before = remote.head()
    assert await repository.apply_change(edit, "nothing") is None
    assert remote.head() == before


async def test_keeps_its_clone_and_follows_the_remote(remote: Remote, repository: GitRepository) -> None:
    await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "first")
    marker = repository.worktree / ".git" / "kept"
    marker.write_text("the same clone")
    remote.push_change(RELEASES, "    replicas: 1", "    replicas: 3")

    result = await repository.apply_change(replace_line("    replicas: 3", "    replicas: 4"), "second")

    assert result is not None
    assert marker.exists()
    assert remote.count() == 4
    assert remote.changed_lines() == ["-    replicas: 3", "+    replicas: 4"]
    assert NEW_TAG_LINE in remote.show(RELEASES)


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        pytest.param(OTHER, "    version: 1.0.0", "    version: 1.1.0", id="other-file"),
        pytest.param(RELEASES, "    replicas: 1", "    replicas: 2", id="same-file-other-line"),
    ],
)
async def test_a_push_that_races_ours_is_kept_and_ours_redone(
    remote: Remote, repository: GitRepository, path: str, old: str, new: str
) -> None:
    def others(call: int) -> None:
        if call == 1:
            remote.push_change(path, old, new)

    edit, calls = racing(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), others)
    theirs_parent = remote.head()

    result = await repository.apply_change(edit, commit_message([UPDATE]))

    assert result is not None
    assert (result.push_attempts, calls) == (2, [1, 2])
    assert remote.count() == 3
    assert remote.git("rev-parse", "main~2").strip() == theirs_parent
    assert remote.git("log", "-1", "--format=%an", "main~1").strip() == SOMEONE.name
    assert remote.changed_lines() == [f"-{OLD_TAG_LINE}", f"+{NEW_TAG_LINE}"]
    assert remote.changed_lines("main~1") == [f"-{old}", f"+{new}"]
    assert new in remote.show(path)
    assert NEW_TAG_LINE in remote.show(RELEASES)


async def test_a_branch_that_always_moves_ends_in_push_rejected(remote: Remote, tmp_path: Path) -> None:
    repository = _repository(remote, tmp_path / "state", push_attempts=3)
    versions = iter(range(1, 10))

    def others(call: int) -> None:
        version = next(versions)
        remote.push_change(OTHER, f"    version: 1.{version - 1}.0", f"    version: 1.{version}.0")

    edit, calls = racing(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), others)

    with pytest.raises(PushRejected, match="branch main moved on each of 3 attempts") as raised:
        await repository.apply_change(edit, "never lands")

    assert (raised.value.attempts, calls) == (3, [1, 2, 3])
    assert OLD_TAG_LINE in remote.show(RELEASES)
    assert remote.count() == 4


async def test_a_declining_hook_is_not_retried(remote: Remote, repository: GitRepository) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    edit, calls = racing(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), lambda call: None)

    with pytest.raises(PushRejected, match=r"pre-receive hook declined.*remote: main is protected") as raised:
        await repository.apply_change(edit, "declined")

    assert (raised.value.attempts, calls) == (1, [1])
    assert remote.count() == 1


async def test_a_failed_edit_leaves_nothing_behind(remote: Remote, repository: GitRepository) -> None:
    def broken(root: Path) -> list[ChangedFile]:
        (root / "stray.yaml").write_text("half-written: true\n")
        (root / RELEASES).write_text("garbage\n")
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"):
        await repository.apply_change(broken, "broken")
    result = await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "after a failure")

    assert result is not None
    assert result.files == (RELEASES,)
    assert remote.changed_lines() == [f"-{OLD_TAG_LINE}", f"+{NEW_TAG_LINE}"]
    assert not (repository.worktree / "stray.yaml").exists()


async def test_a_clone_of_another_remote_is_replaced(remote: Remote, tmp_path: Path) -> None:
    state = tmp_path / "state"
    await _repository(remote, state).sync()
    worktree = state / "worktree"
    remote.git("remote", "set-url", "origin", "file:///elsewhere.git", cwd=worktree)
    (worktree / ".git" / "kept").write_text("old clone")

    head = await _repository(remote, state).sync()

    assert head == remote.head()
    assert not (worktree / ".git" / "kept").exists()
    assert not (state / "worktree.partial").exists()


async def test_clones_only_the_branch_head(remote: Remote, repository: GitRepository) -> None:
    remote.push_change(OTHER, "    version: 1.0.0", "    version: 1.1.0")
    await repository.sync()
    assert (repository.worktree / ".git" / "shallow").is_file()
    assert remote.git("rev-list", "--count", "HEAD", cwd=repository.worktree).strip() == "1"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        pytest.param(
            "file:///nonexistent/repo.git", "does not appear to be a git repository", id="no-repository"
        ),
        pytest.param(
            f"git://127.0.0.1:{_closed_port()}/repo.git", "unable to connect", id="connection-refused"
        ),
    ],
)
async def test_an_unreachable_remote_is_a_clean_error(tmp_path: Path, url: str, detail: str) -> None:
    repository = GitRepository(GitRemote(url), tmp_path / "state")
    with pytest.raises(RemoteUnreachable) as raised:
        await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "unreachable")
    message = str(raised.value)
    assert message.startswith("git clone failed: ")
    assert detail in message
    assert "\n" not in message
    assert "hint" not in message
    assert "Please make sure" not in message


async def test_a_missing_branch_is_a_git_error(remote: Remote, tmp_path: Path) -> None:
    repository = GitRepository(GitRemote(remote.url, "release"), tmp_path / "state")
    with pytest.raises(GitError) as raised:
        await repository.sync()
    assert type(raised.value) is RefNotFound
    assert str(raised.value) == "git clone failed: Remote branch release not found in upstream origin"


async def test_https_credentials_reach_git_only_through_askpass(remote: Remote, tmp_path: Path) -> None:
    """No HTTPS server here: git's own credential lookup shows it asks our askpass, with our variables."""
    credentials = BasicCredentials("bot", "s3cr3t-t0ken")
    state = tmp_path / "state"
    repository = GitRepository(GitRemote(remote.url, "main", credentials=credentials), state)
    await repository.sync()

    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(repository.layout.askpass.stat().st_mode) == 0o700
    assert "s3cr3t" not in repository.layout.askpass.read_text()
    assert "s3cr3t" not in (repository.worktree / ".git" / "config").read_text()

    env = git_environment(os.environ, repository.layout, credentials)
    filled = _git(["credential", "fill"], cwd=None, env=env, stdin="protocol=https\nhost=git.example.com\n\n")
    assert "username=bot\n" in filled
    assert "password=s3cr3t-t0ken\n" in filled
