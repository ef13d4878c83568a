"""SIGKILL of the image-policy sidecar at named points of a cycle and of a git push, then a restart: every tag
move lands once in the cluster and once in git, and every state file in --state-dir is whole.

Each kill lands where it is named, never by timing:
- mid-cycle, a registry request held by `FaultProxy.hold(matching)`: the tag list in flight, or (pinned
  digest) the digest lookup of the tag already chosen, i.e. between listing the tags and patching;
- between acting and telling, the same hook holding the API request that posts the Event (`POST events
  ImageUpdated`, `POST events ImageGitCommitted`) with its headers sent and its body not: the tag is patched or
  the commit pushed, nothing said yet; and the journal's write that removes the told record (told, not recorded);
- at a state write, an audit hook in the sidecar (`tests/support/write_gate.py`) holding
  `write_atomically` once the temporary exists and before it is renamed over the file; the first tag-cache
  write of a cycle comes after that cycle's patches, so it is also "patched, not yet recorded";
- in git write-back, a `git` first on the sidecar's PATH (`helm_wrapper.CommandWrapper`) holding a command
  before it starts or after it returned, and for the push itself a pre-receive hook on the remote, served by
  `git daemon` (a process of its own, as a real server is), holding the push after the pack arrived and before
  the ref moves. Killing the sidecar kills its `git push`, not the server; the test then has the server either
  refuse the orphaned push (the ref never moved) or accept it (it landed, and the sidecar never heard).

A move counts once in the cluster when `.metadata.generation` rose by one for it (every change of the spec
raises it) and one `ImageUpdated` Event says so; once in git when the remote branch gained exactly one commit,
whose diff is the one tag line, and one `ImageGitCommitted` Event says so. `pytest -s` prints one line per run for the closing note's table.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.integration.test_git_writeback import Remote
from tests.integration.test_image_policy import AUTOMATED, MANIFEST, Releases, releases, remote, seed
from tests.integration.test_image_policy_cli import _environment
from tests.support.fault_proxy import FaultProxy, manifest_of
from tests.support.helm_wrapper import AFTER, BEFORE, CommandWrapper
from tests.support.procs import Process, free_port
from tests.support.registry import ImagePusher, Registry, utc
from tests.support.sidecar import wait_for_cycles
from tests.support.wait import eventually
from tests.support.write_gate import WriteGates

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["releases", "remote"]  # fixtures shared with test_image_policy

TIMEOUT = 120
CONTAINER = "chart-image"
SEMVER = {"fluxcd.io/tag.chart-image": "semver:~1.0"}
PINNED = {**SEMVER, "image.helm.fluxcd.io/pin-digest.chart-image": "true"}
#: A glob ranks by build time: the scan looks the build times up, and the tag cache records them.
NEWEST_BUILT = {"fluxcd.io/tag.chart-image": "glob:1.0.*"}
WRITEBACK = {**AUTOMATED, **SEMVER, "image.helm.fluxcd.io/git-writeback": "true"}
#: (tag, minutes ago); `semver:~1.0` chooses 1.0.5.
TAGS = (("1.0.0", 60), ("1.0.5", 50), ("1.1.0", 40), ("2.0.0", 30))
TAG_CACHE = "tag-cache.json"
JOURNAL = "pending-moves.json"


@dataclass(frozen=True)
class Image:
    """A repository of its own per test (no other test's sidecar reads it), with the digest of each tag."""

    reference: str
    repository: str
    digests: dict[str, str]

    def push(self, pusher: ImagePusher, tag: str) -> None:
        self.digests[tag] = pusher.push(self.repository, tag, created=utc(1))

    def through(self, host: str) -> str:
        """The same repository reached at `host` (a proxy)."""
        return f"{host}/{self.repository}"


@pytest.fixture
def image(pusher: ImagePusher) -> Image:
    repository = f"team/crash-{uuid.uuid4().hex[:8]}"
    digests = {tag: pusher.push(repository, tag, created=utc(minutes)) for tag, minutes in TAGS}
    return Image(f"{pusher.registry.host}/{repository}", repository, digests)


# --- the sidecar, restartable over one --state-dir ---------------------------------------------------------


@dataclass
class Sidecars:
    """Starts the sidecar (a cycle every second) through the write-gating launcher, with a recorded, gated git
    first on its PATH, over one --state-dir shared by every start: a new start is a restart."""

    kubeconfig: Path
    namespace: str
    tmp: Path
    git: CommandWrapper
    writes: WriteGates
    state_dir: Path
    started: list[Process]
    git_flags: tuple[str, ...] = ()
    registry_host: str = ""

    def start_git(self) -> Process:
        """Start with the git remote of the test (`git_flags`), reaching the registry at `registry_host`."""
        return self.start(self.registry_host, *self.git_flags)

    def start(self, registry_host: str, *extra: str) -> Process:
        args = [
            "image-policy",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
            "--insecure-registry",
            registry_host,
            "--interval",
            "1",
            *extra,
        ]
        args += ["--state-dir", str(self.state_dir), "--health-port", "0", "--metrics-port", "0"]
        env = dict(_environment(), PYTHONUNBUFFERED="1")
        env["PATH"] = os.pathsep.join([str(self.git.path.parent), env.get("PATH", "")])
        log = self.tmp / f"sidecar-{len(self.started)}.log"
        process = Process("sidecar", [sys.executable, str(self.writes.path), *args], log, env=env).start()
        self.started.append(process)
        return process

    def state_files(self) -> dict[str, bytes]:
        """Every state file (outside the git clone) by name, each proven whole: the JSON ones parse.

        A temporary of an interrupted write (`.<name>.<random>.tmp`) is not a state file: nothing reads it.
        """
        found = {}
        for path in sorted(self.state_dir.iterdir()):
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            data = path.read_bytes()
            if path.suffix == ".json":
                json.loads(data)
            found[path.name] = data
        return found

    def temporaries(self) -> list[str]:
        return sorted(path.name for path in self.state_dir.iterdir() if path.name.endswith(".tmp"))


@pytest.fixture
def sidecars(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[Sidecars]:
    git = CommandWrapper.create(tmp_path / "git-wrapper", "git", name="git")
    state = tmp_path / "state"
    writes = WriteGates.create(tmp_path / "write-gates", state)
    started: list[Process] = []
    yield Sidecars(kubeconfig, namespace, tmp_path, git, writes, state, started)
    git.disarm_all()
    writes.disarm_all()
    for process in started:
        process.stop()


@dataclass(frozen=True)
class Cluster:
    """What the cluster holds of one release: its tag, how often its spec changed, the moves it was told of."""

    releases: Releases
    name: str = "hr"

    def tag(self) -> str:
        return str(self.releases.values(self.name)["image"]["tag"])

    def spec_changes(self) -> int:
        """Changes of the spec since the release was created (generation 1)."""
        return int(self.releases.get(self.name)["metadata"]["generation"]) - 1

    def moves(self) -> int:
        return len(self.releases.events(self.name, "ImageUpdated"))

    def commits_told(self) -> list[str]:
        """The messages of the `ImageGitCommitted` Events."""
        return [event[2] for event in self.releases.events(self.name, "ImageGitCommitted")]

    def written(self) -> str | None:
        annotations = self.releases.get(self.name)["metadata"].get("annotations", {})
        written = annotations.get(f"image.helm.fluxcd.io/written.{CONTAINER}")
        return None if written is None else str(written)


def record(scenario: str, **facts: object) -> None:
    """One run's outcome, for the closing note's table (`pytest -s` shows it)."""
    print(f"\nsidecar kill {scenario}: " + ", ".join(f"{key}={value}" for key, value in facts.items()))


def assert_moved_once(cluster: Cluster, tag: str, *, changes: int = 1) -> None:
    assert cluster.tag() == tag, "the right tag, not another"
    assert cluster.spec_changes() == changes, "each move changed the spec once: none lost, none twice"
    assert cluster.moves() == changes, "one ImageUpdated Event per move"
    assert cluster.written() == tag


def assert_no_traceback(process: Process) -> None:
    assert "Traceback" not in process.log_path.read_text(errors="replace")


# --- mid-cycle: a registry request held --------------------------------------------------------------------


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("point", ["listing-tags", "digest-of-the-chosen-tag"])
def test_killed_mid_cycle_the_restart_moves_the_tag_once(
    point: str, sidecars: Sidecars, releases: Releases, proxy: FaultProxy, image: Image
) -> None:
    cluster = Cluster(releases)
    annotations, expected = {**AUTOMATED, **SEMVER}, "1.0.5"
    if point == "listing-tags":
        proxy.hold(lambda method, path: "/tags/list" in path)
    else:  # the tags were listed and 1.0.5 chosen; its digest is what the patch still waits for
        annotations, expected = {**AUTOMATED, **PINNED}, f"1.0.5@{image.digests['1.0.5']}"
        proxy.hold(manifest_of("1.0.5"))
    releases.create("hr", {"image": {"repository": image.through(proxy.host), "tag": "1.0.0"}}, annotations)
    first = sidecars.start(proxy.host)
    first.wait_until(lambda: proxy.stalled > 0, TIMEOUT, f"its first scan held at {point}")
    first.kill()
    assert cluster.tag() == "1.0.0"
    assert cluster.spec_changes() == 0
    files = sidecars.state_files()
    proxy.release()

    restarted = sidecars.start(proxy.host)
    restarted.wait_until(lambda: cluster.tag() == expected, TIMEOUT, "the tag moved")
    wait_for_cycles(restarted, 2, TIMEOUT)
    assert_moved_once(cluster, expected)
    restarted.stop()
    sidecars.state_files()
    assert not sidecars.temporaries()
    assert_no_traceback(restarted)
    record(f"mid-cycle {point}", files_left=sorted(files), converged=True, lost=0, duplicated=0)


# --- between acting and telling -------------------------------------------------------------------------------


def pending_records(sidecars: Sidecars) -> list[object]:
    """The records of the journal of moves under way (none when the file is not there)."""
    data = sidecars.state_files().get(JOURNAL)
    return [] if data is None else list(json.loads(data)["entries"])


def test_killed_after_the_patch_before_its_event_the_restart_tells_the_move_once(
    sidecars: Sidecars, releases: Releases, registry: Registry, image: Image
) -> None:
    cluster = Cluster(releases)
    releases.create("hr", {"image": {"repository": image.reference, "tag": "1.0.0"}}, {**AUTOMATED, **SEMVER})
    telling = sidecars.writes.arm(BEFORE, "POST events ImageUpdated")
    first = sidecars.start(registry.host)
    telling.wait_held(TIMEOUT, context=first.log_path.read_text)
    assert (cluster.tag(), cluster.spec_changes(), cluster.moves()) == ("1.0.5", 1, 0), "patched, not told"
    first.kill()
    left = pending_records(sidecars)

    restarted = sidecars.start(registry.host)
    wait_for_cycles(restarted, 3, TIMEOUT)
    assert_moved_once(cluster, "1.0.5")
    assert pending_records(sidecars) == [], "the record removed once told"
    restarted.stop()
    assert_no_traceback(restarted)
    record("patched, Event not sent", records_left=len(left), converged=True, lost=0, duplicated=0)


def test_killed_after_the_event_before_its_record_went_the_restart_does_not_tell_it_again(
    sidecars: Sidecars, releases: Releases, registry: Registry, image: Image
) -> None:
    cluster = Cluster(releases)
    releases.create("hr", {"image": {"repository": image.reference, "tag": "1.0.0"}}, {**AUTOMATED, **SEMVER})
    telling = sidecars.writes.arm(BEFORE, "POST events ImageUpdated")
    first = sidecars.start(registry.host)
    telling.wait_held(TIMEOUT, context=first.log_path.read_text)
    assert len(pending_records(sidecars)) == 1, "recorded before the patch"
    removing = sidecars.writes.arm(BEFORE, JOURNAL)  # the next write of the journal: the told record removed
    telling.open()
    removing.wait_held(TIMEOUT, context=first.log_path.read_text)
    first.kill()
    assert_moved_once(cluster, "1.0.5")
    assert len(pending_records(sidecars)) == 1, "told, still recorded"
    assert len(sidecars.temporaries()) == 1, "the removal's temporary, never renamed"

    restarted = sidecars.start(registry.host)
    wait_for_cycles(restarted, 3, TIMEOUT)
    assert_moved_once(cluster, "1.0.5")
    assert pending_records(sidecars) == []
    assert not sidecars.temporaries(), "removed at start"
    log = restarted.log_path.read_text(errors="replace")
    assert "Event ImageUpdated was posted before the restart" in log, "the re-post found its name taken"
    restarted.stop()
    assert_no_traceback(restarted)
    record("Event sent, record not removed", converged=True, lost=0, duplicated=0)


# --- at a state write ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", [BEFORE, AFTER], ids=["temporary-empty", "temporary-whole-not-renamed"])
def test_killed_while_writing_the_tag_cache_the_old_file_stands_and_moves_land_once(
    point: str, sidecars: Sidecars, releases: Releases, registry: Registry, image: Image, pusher: ImagePusher
) -> None:
    cluster = Cluster(releases)
    annotations = {**AUTOMATED, **NEWEST_BUILT}
    releases.create("hr", {"image": {"repository": image.reference, "tag": "1.0.0"}}, annotations)
    moved = "1.0.5"

    # First write of the cache: the cycle has patched the release and posted its Event, and records it now.
    gate = sidecars.writes.arm(point, TAG_CACHE)
    first = sidecars.start(registry.host)
    gate.wait_held(TIMEOUT, context=first.log_path.read_text)
    assert_moved_once(cluster, moved)  # patched, not yet recorded
    first.kill()
    assert TAG_CACHE not in sidecars.state_files(), "never written: absent, not half there"
    left = sidecars.temporaries()
    assert len(left) == 1, left

    restarted = sidecars.start(registry.host)
    restarted.wait_until(lambda: TAG_CACHE in sidecars.state_files(), TIMEOUT, "its tag cache written")
    wait_for_cycles(restarted, 2, TIMEOUT)
    assert_moved_once(cluster, moved)
    assert not sidecars.temporaries(), "the temporary of the killed write removed at start"
    before = sidecars.state_files()[TAG_CACHE]

    # A write that replaces the file: a new tag, a move, and the cache written after it.
    gate = sidecars.writes.arm(point, TAG_CACHE)
    image.push(pusher, "1.0.6")
    gate.wait_held(TIMEOUT, context=restarted.log_path.read_text)
    newer = "1.0.6"
    assert_moved_once(cluster, newer, changes=2)
    restarted.kill()
    assert sidecars.state_files()[TAG_CACHE] == before, "the old file, whole, until the new one replaces it"
    assert len(sidecars.temporaries()) == 1

    again = sidecars.start(registry.host)
    wait_for_cycles(again, 3, TIMEOUT)
    assert_moved_once(cluster, newer, changes=2)
    log = again.log_path.read_text(errors="replace")
    assert f"tag cache {sidecars.state_dir / TAG_CACHE}: " in log, "the file it read was usable"
    assert "starting empty" not in log
    again.stop()
    assert_no_traceback(again)
    assert b"1.0.6" in sidecars.state_files()[TAG_CACHE]
    assert not sidecars.temporaries()
    record(f"state write {point}", converged=True, lost=0, duplicated=0)


# --- git write-back ------------------------------------------------------------------------------------------

PRE_RECEIVE = """#!/bin/sh
# Holds one push (armed by the test) after its pack arrived and before any ref moves, until the test says
# whether to accept it (push.accept) and removes push.held; push.done says the hook has answered.
cat >/dev/null
if mv "{gates}/push.armed" "{gates}/push.held" 2>/dev/null; then
  while [ -e "{gates}/push.held" ]; do sleep 0.05; done
  if [ -e "{gates}/push.accept" ]; then
    echo accepted >"{gates}/push.done"
    exit 0
  fi
  echo refused >"{gates}/push.done"
  exit 1
fi
exit 0
"""


@dataclass
class GitServer:
    """`git daemon` serving the bare repository of `remote` for pushes, with a pre-receive hook that can hold one."""

    remote: Remote
    process: Process
    url: str
    gates: Path

    def hold_next_push(self) -> None:
        (self.gates / "push.armed").touch()

    def push_held(self) -> bool:
        return (self.gates / "push.held").exists()

    def answer_push(self, *, accept: bool) -> None:
        if accept:
            (self.gates / "push.accept").touch()
        (self.gates / "push.held").unlink()

    def push_answered(self) -> str:
        path = self.gates / "push.done"
        return path.read_text().strip() if path.exists() else ""


@pytest.fixture
def git_server(remote: Remote, tmp_path: Path) -> Iterator[GitServer]:
    gates = tmp_path / "push-gates"
    gates.mkdir()
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE.format(gates=gates))
    hook.chmod(0o755)
    # No keepalive packets while the hook holds the push: writing one to the killed client would end the
    # server's side early, and which of the two a run met would depend on time.
    remote.git("config", "receive.keepAlive", "0")
    port = free_port()
    args = [
        "git",
        "daemon",
        "--reuseaddr",
        f"--base-path={remote.bare.parent}",
        "--export-all",
        "--enable=receive-pack",
        "--listen=127.0.0.1",
        f"--port={port}",
    ]
    process = Process("git-daemon", args, tmp_path / "git-daemon.log").start()

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    process.wait_until(listening, 30, "listening")
    yield GitServer(remote, process, f"git://127.0.0.1:{port}/{remote.bare.name}", gates)
    (gates / "push.held").unlink(missing_ok=True)
    process.stop()


#: Pushed and heard, its Event's body not yet sent to the API server.
COMMIT_EVENT = "before-commit-event"
GIT_POINTS = {
    "before-clone": (BEFORE, "clone"),
    "after-clone": (AFTER, "clone"),
    "before-commit": (BEFORE, "commit"),
    "before-push": (BEFORE, "push"),
    "after-push": (AFTER, "push"),  # the remote took it; the sidecar has not seen the answer
}
#: Held by the server's hook, the client killed, then the orphaned push refused or accepted by the server.
SERVER_POINTS = {"mid-push-refused": False, "mid-push-landed": True}
#: `git commit` killed while it updates the branch, holding the ref's lock: a reference-transaction hook put
#: into the sidecar's clone holds it in the "prepared" state (every ref to update locked, none moved yet).
HOLD_REF_UPDATE = """#!/bin/sh
cat >/dev/null
if [ "$1" = prepared ] && mv "{gates}/commit.armed" "{gates}/commit.held" 2>/dev/null; then
  while [ -e "{gates}/commit.held" ]; do sleep 0.05; done
fi
exit 0
"""


def hold_the_commit(sidecars: Sidecars, gates: Path) -> Process:
    """Start the sidecar with its first `git commit` held mid-run, the branch's ref locked; return it."""
    gates.mkdir()
    committing = sidecars.git.arm(BEFORE, "commit")
    process = sidecars.start_git()
    committing.wait_held(TIMEOUT, context=process.log_path.read_text)
    clone = sidecars.state_dir / "git" / "worktree" / ".git"
    hook = clone / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOLD_REF_UPDATE.format(gates=gates))
    hook.chmod(0o755)
    (gates / "commit.armed").touch()
    committing.open()
    process.wait_until((gates / "commit.held").exists, TIMEOUT, "its git commit held by the hook")
    assert (clone / "refs" / "heads" / "main.lock").exists(), "git commit runs, holding the branch's lock"
    return process


@pytest.mark.parametrize("point", [*GIT_POINTS, "mid-commit", *SERVER_POINTS, COMMIT_EVENT])
def test_killed_during_git_writeback_the_move_lands_once_in_git_and_in_the_cluster(
    point: str,
    sidecars: Sidecars,
    git_server: GitServer,
    releases: Releases,
    registry: Registry,
    image: Image,
    namespace: str,
) -> None:
    cluster = Cluster(releases)
    sidecars.registry_host = registry.host
    manifest = MANIFEST.format(namespace=namespace, image=image.reference)
    seed(git_server.remote, {"apps/hr.yaml": manifest})
    seeded = git_server.remote.count()
    releases.create(
        "hr", {"image": {"repository": image.reference, "tag": "1.0.0"}, "replicas": 1}, WRITEBACK
    )
    flags = ("--git-url", git_server.url, "--git-branch", "main")
    sidecars.git_flags = flags
    wait_killed: Callable[[], object]
    if point == "mid-commit":
        first = hold_the_commit(sidecars, sidecars.tmp / "commit-gates")
        first.kill()
    elif point in SERVER_POINTS:
        git_server.hold_next_push()
        first = sidecars.start(registry.host, *flags)
        first.wait_until(git_server.push_held, TIMEOUT, "its push held by the server's pre-receive hook")
        first.kill()
        git_server.answer_push(accept=SERVER_POINTS[point])
        if SERVER_POINTS[point]:
            wait_killed = lambda: git_server.remote.count() == seeded + 1  # noqa: E731 - the orphan landed
        else:
            wait_killed = git_server.push_answered
        eventually(wait_killed, TIMEOUT, "the server to finish the push of the killed sidecar")
    elif point == COMMIT_EVENT:
        telling = sidecars.writes.arm(BEFORE, "POST events ImageGitCommitted")
        first = sidecars.start(registry.host, *flags)
        telling.wait_held(TIMEOUT, context=first.log_path.read_text)
        first.kill()
        assert cluster.commits_told() == []
    else:
        where, command = GIT_POINTS[point]
        gate = sidecars.git.arm(where, command)
        first = sidecars.start(registry.host, *flags)
        gate.wait_held(TIMEOUT, context=first.log_path.read_text)
        first.kill()
    assert cluster.tag() == "1.0.0", "git first: killed before the cluster was patched"
    assert cluster.spec_changes() == 0
    sidecars.state_files()
    landed_unheard = 1 if point in ("after-push", "mid-push-landed", COMMIT_EVENT) else 0
    assert git_server.remote.count() == seeded + landed_unheard

    restarted = sidecars.start(registry.host, *flags)
    restarted.wait_until(lambda: cluster.tag() == "1.0.5", TIMEOUT, "the tag moved in the cluster")
    wait_for_cycles(restarted, 2, TIMEOUT)
    commits = git_server.remote.count() - seeded
    assert commits == 1, "one commit for the move: not lost, not twice"
    assert git_server.remote.changed_lines() == ["-      tag: 1.0.0", "+      tag: 1.0.5"]
    assert git_server.remote.show("apps/hr.yaml") == manifest.replace("tag: 1.0.0", "tag: 1.0.5")
    assert_moved_once(cluster, "1.0.5")
    sha = git_server.remote.git("rev-parse", "main").strip()
    assert len(cluster.commits_told()) == 1, "one ImageGitCommitted Event for the commit: not lost, not twice"
    assert cluster.commits_told()[0].startswith(f"committed {sha[:12]} to main: "), "the commit that landed"
    if point == "mid-commit":
        assert (
            "left by a git command that was stopped midway; cloning again" in restarted.log_path.read_text()
        )
    heard = [call for call in sidecars.git.calls("push") if call.returncode == 0]
    assert len(heard) == 1 - (point == "mid-push-landed"), "pushed again only if the killed push did not land"
    restarted.stop()
    sidecars.state_files()
    assert_no_traceback(restarted)
    record(f"git {point}", commits=commits, converged=True, lost=0, duplicated=0)
