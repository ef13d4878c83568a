"""Faults of git remotes, for git chart sources (through the real operator) and for image write-back (through
the real sidecar, and the repository adapter it uses): a push a hook rejects, history the remote rewrote, a
branch that vanished after the first checkout, a remote that became unreachable after it had served us.

An unreachable remote and a missing branch at the very start are covered in test_chart_sources.py and
test_git_writeback.py; here every fault comes after a success, so what was fetched or committed before must stay
as it was, the condition or Event must say what happened (once), and everything must heal by itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from tests.integration.test_git_writeback import (
    NEW_TAG_LINE,
    OLD_TAG_LINE,
    OTHER,
    RELEASES,
    SEED,
    Remote,
    _repository,
    remote,
    replace_line,
)
from tests.integration.test_image_policy import AUTOMATED, MANIFEST, Releases, app, releases, seed
from tests.integration.test_image_policy_cli import _environment, sidecar_args
from tests.support.examples import _git, commit_and_push, git_chart_repository
from tests.support.helmtool import Helm
from tests.support.operator import (
    StartOperator,
    condition,
    create_hr,
    events_for,
    get_hr,
    helmrelease,
    ready,
    request_passes,
    wait_for_hr,
)
from tests.support.procs import Process
from tests.support.registry import Registry

from helmrelease.adapters.git import RefNotFound, RemoteUnreachable

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")
__all__ = ["app", "releases", "remote"]  # fixtures shared with test_image_policy and test_git_writeback


def history(helm: Helm, namespace: str, release: str) -> list[int]:
    return [entry["revision"] for entry in helm.json("history", release, "--namespace", namespace)]


def change_chart(work: Path, key: str) -> None:
    configmap = work / "charts" / "app" / "templates" / "configmap.yaml"
    configmap.write_text(configmap.read_text() + f'  {key}: "yes"\n')


# ---- git chart sources, through the operator


def test_a_force_pushed_branch_is_followed_to_the_rewritten_commit(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    helm: Helm,
) -> None:
    url, work = git_chart_repository(tmp_path)
    operator = start_operator("--git-protocols", "file", resync_interval=2)
    create_hr(custom, namespace, helmrelease("gitapp", {"git": url, "ref": "main", "path": "charts/app"}))
    first = wait_for_hr(custom, namespace, "gitapp", ready, operator=operator)["status"]["revision"]

    # The remote rewrites main: a new root commit with another chart, force-pushed over the old history.
    _git("checkout", "--quiet", "--orphan", "rewritten", cwd=work)
    change_chart(work, "rewritten")
    _git("add", "-A", cwd=work)
    _git("commit", "--quiet", "-m", "Rewritten history", cwd=work)
    _git("push", "--quiet", "--force", "origin", "HEAD:main", cwd=work)
    rewritten = _git("rev-parse", "HEAD", cwd=work)
    assert first not in _git("rev-list", rewritten, cwd=work).split()

    hr = wait_for_hr(
        custom,
        namespace,
        "gitapp",
        lambda hr: hr["status"].get("revision") == rewritten and ready(hr),
        operator=operator,
        what=f"the rewritten commit {rewritten}",
    )
    assert condition(hr, "ChartFetched")["status"] == "True"
    assert core.read_namespaced_config_map(f"{namespace}-gitapp", namespace).data["rewritten"] == "yes"
    assert history(helm, namespace, f"{namespace}-gitapp") == [1, 2]
    assert [kind for kind, _, _ in events_for(core, namespace, "gitapp")] == ["Normal", "Normal"]


def _vanish_branch(bare: Path, work: Path) -> Callable[[], str]:
    """Delete branch `feature` on the remote; the returned heal pushes it again, one commit later."""
    _git("push", "--quiet", "origin", "--delete", "feature", cwd=work)

    def heal() -> str:
        change_chart(work, "healed")
        return commit_and_push(work, "Feature is back", branch="feature")

    return heal


def _unreachable(bare: Path, work: Path) -> Callable[[], str]:
    """Move the remote away; the returned heal moves it back and pushes one more commit to it."""
    away = bare.with_name("moved-away.git")
    bare.rename(away)

    def heal() -> str:
        away.rename(bare)
        change_chart(work, "healed")
        return commit_and_push(work, "Pushed once the remote is back", branch="feature")

    return heal


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        pytest.param(_vanish_branch, "no branch or tag 'feature' in the repository", id="branch-deleted"),
        pytest.param(_unreachable, "does not appear to be a git repository", id="remote-unreachable"),
    ],
)
def test_a_git_source_that_fails_after_a_checkout_keeps_the_release_and_heals(
    fault: Callable[[Path, Path], Callable[[], str]],
    says: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    helm: Helm,
) -> None:
    url, work = git_chart_repository(tmp_path)
    _git("checkout", "--quiet", "-b", "feature", cwd=work)
    _git("push", "--quiet", "origin", "HEAD:feature", cwd=work)
    first = _git("rev-parse", "HEAD", cwd=work)
    operator = start_operator("--git-protocols", "file", resync_interval=2)
    create_hr(custom, namespace, helmrelease("gitapp", {"git": url, "ref": "feature", "path": "charts/app"}))
    hr = wait_for_hr(custom, namespace, "gitapp", ready, operator=operator)
    assert hr["status"]["revision"] == first
    release = f"{namespace}-gitapp"

    heal = fault(tmp_path / "charts.git", work)
    hr = wait_for_hr(
        custom,
        namespace,
        "gitapp",
        lambda hr: condition(hr, "Ready").get("reason") == "ChartFetchFailed",
        operator=operator,
        what="Ready=False, ChartFetchFailed",
    )
    message = condition(hr, "ChartFetched")["message"]
    assert message.startswith(f"Fetching chart charts/app from {url} failed: "), message
    assert says in message
    assert message.endswith(f"; the release keeps chart {first}"), message
    request_passes(custom, namespace, "gitapp", 1, operator=operator)  # a second failed pass: nothing new
    hr = get_hr(custom, namespace, "gitapp")
    assert (hr["status"]["revision"], hr["status"]["releaseStatus"]) == (first, "deployed")
    assert history(helm, namespace, release) == [1], "nothing was deployed for a source that failed"
    assert [(kind, reason) for kind, reason, _ in events_for(core, namespace, "gitapp")] == [
        ("Normal", "InstallSucceeded"),
        ("Warning", "ChartFetchFailed"),
    ]

    healed = heal()
    hr = wait_for_hr(
        custom,
        namespace,
        "gitapp",
        lambda hr: hr["status"].get("revision") == healed and ready(hr),
        operator=operator,
        timeout=200,  # the retry after a failed fetch comes 2 minutes later
        what=f"the commit pushed after healing, {healed}",
    )
    assert core.read_namespaced_config_map(release, namespace).data["healed"] == "yes"
    assert history(helm, namespace, release) == [1, 2]
    assert "Traceback" not in operator.log()


# ---- image write-back: the repository adapter


async def test_history_the_remote_rewrote_is_followed_without_resurrecting_our_commit(
    remote: Remote, tmp_path: Path
) -> None:
    repository = _repository(remote, tmp_path / "state")
    ours = await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "first")
    assert ours is not None
    marker = repository.worktree / ".git" / "kept"
    marker.write_text("the same clone")

    # Someone rewrites main: one new root commit, the tag back at the old one, replicas changed; force-pushed.
    rewrite = remote.scratch / "rewrite"
    remote.git("clone", "--quiet", remote.url, str(rewrite), cwd=remote.scratch)
    remote.git("checkout", "--quiet", "--orphan", "rewritten", cwd=rewrite)
    (rewrite / RELEASES).write_text(SEED[RELEASES].replace("    replicas: 1", "    replicas: 9"))
    remote.git("add", "--all", cwd=rewrite)
    remote.git("commit", "--quiet", "-m", "rewritten history", cwd=rewrite)
    remote.git("push", "--quiet", "--force", "origin", "HEAD:main", cwd=rewrite)
    rewritten = remote.head()

    again = await repository.apply_change(
        replace_line("    replicas: 9", "    replicas: 10"), "after the rewrite"
    )

    assert again is not None
    assert remote.git("rev-parse", "main~1").strip() == rewritten
    assert remote.count() == 2, "only the rewritten root and our new commit"
    assert remote.changed_lines() == ["-    replicas: 9", "+    replicas: 10"]
    assert OLD_TAG_LINE in remote.show(RELEASES), "the tag change from before the rewrite came back"
    assert ours.sha not in remote.git("rev-list", "main").split(), (
        "our commit from before the rewrite is back"
    )
    assert marker.exists(), "the kept clone followed the rewrite instead of being cloned again"


async def test_a_branch_deleted_after_the_first_clone_is_not_recreated(
    remote: Remote, tmp_path: Path
) -> None:
    repository = _repository(remote, tmp_path / "state")
    head = await repository.sync()
    remote.git("update-ref", "-d", "refs/heads/main")

    with pytest.raises(RefNotFound) as raised:
        await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "into the void")

    assert str(raised.value) == "git fetch failed: couldn't find remote ref refs/heads/main"
    assert remote.git("for-each-ref", "refs/heads").strip() == "", "the write-back recreated the branch"
    remote.git("update-ref", "refs/heads/main", head)
    result = await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "once it is back")
    assert result is not None
    assert remote.git("rev-parse", "main~1").strip() == head


async def test_a_remote_unreachable_after_a_clone_keeps_the_clone_and_heals(
    remote: Remote, tmp_path: Path
) -> None:
    repository = _repository(remote, tmp_path / "state")
    await repository.sync()
    marker = repository.worktree / ".git" / "kept"
    marker.write_text("the same clone")
    away = remote.bare.with_name("away.git")
    remote.bare.rename(away)

    with pytest.raises(RemoteUnreachable) as raised:
        await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "unreachable")

    assert str(raised.value).startswith("git fetch failed: ")
    assert "does not appear to be a git repository" in str(raised.value)
    assert marker.exists()
    away.rename(remote.bare)
    remote.push_change(OTHER, "    version: 1.0.0", "    version: 1.1.0")
    result = await repository.apply_change(replace_line(OLD_TAG_LINE, NEW_TAG_LINE), "back")
    assert result is not None
    assert remote.changed_lines() == [f"-{OLD_TAG_LINE}", f"+{NEW_TAG_LINE}"]
    assert remote.count() == 3
    assert marker.exists()


# ---- image write-back: the sidecar, against a hook that rejects its push


@pytest.fixture
def start_sidecar(
    kubeconfig: Path, namespace: str, registry: Registry, tmp_path: Path
) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*extra: str) -> Process:
        args = sidecar_args(
            kubeconfig, namespace, registry, "--interval", "1", "--state-dir", str(tmp_path / "state"), *extra
        )
        env = dict(_environment(), PYTHONUNBUFFERED="1")
        log = tmp_path / f"sidecar-{len(started)}.log"
        process = Process("sidecar", [sys.executable, "-m", "helmrelease", *args], log, env=env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_a_push_the_remote_rejects_is_one_warning_holds_the_cluster_and_heals(
    start_sidecar: Callable[..., Process],
    app: str,
    releases: Releases,
    tmp_path: Path,
    namespace: str,
) -> None:
    origin = Remote(tmp_path / "remote.git", tmp_path / "scratch")
    origin.scratch.mkdir()
    origin.git("init", "--quiet", "--bare", "--initial-branch=main", str(origin.bare), cwd=tmp_path)
    manifest = MANIFEST.format(namespace=namespace, image=app)
    seed(origin, {"apps/hr.yaml": manifest})
    hook = origin.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: open a pull request' >&2\nexit 1\n")
    hook.chmod(0o755)
    releases.create(
        "hr",
        {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1},
        {
            **AUTOMATED,
            "fluxcd.io/tag.chart-image": "semver:~1.0",
            "image.helm.fluxcd.io/git-writeback": "true",
        },
    )
    sidecar = start_sidecar("--git-url", origin.url, "--git-branch", "main")

    def cycles() -> int:
        return sidecar.log_path.read_text(errors="replace").count("scan cycle: ")

    sidecar.wait_until(
        lambda: bool(releases.events("hr", "ImageGitWritebackFailed")), 60, "the rejected push told"
    )
    target = cycles() + 3
    sidecar.wait_until(lambda: cycles() >= target, 60, "three more cycles, each pushing again")
    [(kind, _, message)] = releases.events("hr")
    assert kind == "Warning"
    assert message.startswith("git push failed: ")
    assert "pre-receive hook declined" in message
    assert "remote: main is protected: open a pull request" in message
    assert message.endswith("; the cluster is not updated either")
    assert releases.values("hr")["image"]["tag"] == "1.0.0"
    assert origin.count() == 1
    assert "Traceback" not in sidecar.log_path.read_text()

    hook.unlink()
    sidecar.wait_until(
        lambda: releases.values("hr")["image"]["tag"] == "1.0.5", 60, "the tag moved once git took it"
    )
    assert origin.count() == 2
    assert origin.changed_lines() == ["-      tag: 1.0.0", "+      tag: 1.0.5"]
    assert sorted(reason for _, reason, _ in releases.events("hr")) == [
        "ImageGitCommitted",
        "ImageGitWritebackFailed",
        "ImageUpdated",
    ]
