"""The news owed across a crash: which records still owe an Event (a table), their file, and the loop killed at
each point between acting and telling, restarted over the same file."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.automation.fakes import FakeKube, FakeRegistry, FakeRepository, at, release

from helmrelease.adapters.kube import ApiUnavailable, Conflict
from helmrelease.automation.journal import (
    FORMAT_VERSION,
    Journal,
    JournalFile,
    News,
    Pending,
    PendingMove,
    events_to_tell,
    move_tells,
)
from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.service import ImagePolicyService, ImagePolicySettings
from helmrelease.automation.writeback import GitWriteback

APP = "reg.example.com/team/app"
AUTOMATED = {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:~1.0"}
WRITTEN = "image.helm.fluxcd.io/written."
SHA = "a1" * 20

WEB = PendingMove(
    "web", ((("image", "tag"), "1.0.5"),), "1.0.0", "1.0.5", f"{APP} 1.0.0 → 1.0.5 (semver:~1.0)"
)
PINNED = PendingMove(
    "side",
    ((("side", "tag"), "2.0.1"), (("side", "digest"), "sha256:" + "b" * 64)),
    "2.0.0@sha256:" + "a" * 64,
    "2.0.1@sha256:" + "b" * 64,
    "side 2.0.0 → 2.0.1 digest … (semver:~2.0)",
)
MOVES = Pending(News.MOVES, "apps", "hr", "uid-hr", "41", (WEB, PINNED))
COMMIT = Pending(News.COMMIT, "apps", "hr", "uid-hr", SHA, (WEB,), branch="main")


def cluster(
    *, tag: str = "1.0.5", side: str = "2.0.1", digest: str = "b", written: dict[str, str] | None = None
) -> dict[str, Any]:
    """The object as the API returns it now; by default holding both moves and their records."""
    records = {"web": "1.0.5", "side": "2.0.1@sha256:" + "b" * 64} if written is None else written
    return {
        "metadata": {
            "uid": "uid-hr",
            "annotations": {WRITTEN + container: value for container, value in records.items()},
        },
        "spec": {"values": {"image": {"tag": tag}, "side": {"tag": side, "digest": "sha256:" + digest * 64}}},
    }


ROWS: dict[str, tuple[Pending, dict[str, Any] | None, bool, tuple[str, ...]]] = {
    "both moves landed: both told": (MOVES, cluster(), False, ("web", "side")),
    "the patch never landed: nothing": (
        MOVES,
        cluster(tag="1.0.0", side="2.0.0", digest="a", written={}),
        False,
        (),
    ),
    "the same tag set by someone else, no record of ours: nothing": (
        MOVES,
        cluster(written={"web": "1.0.0", "side": "2.0.0@sha256:" + "a" * 64}),
        False,
        (),
    ),
    "one value changed since: only the other told": (MOVES, cluster(tag="1.0.9"), False, ("side",)),
    "a pinned move needs tag and digest: digest changed since": (MOVES, cluster(digest="c"), False, ("web",)),
    "the object is gone: nothing": (MOVES, None, False, ()),
    "deleted and created again (another uid): nothing": (
        MOVES,
        {**cluster(), "metadata": {**cluster()["metadata"], "uid": "uid-other"}},
        False,
        (),
    ),
    "the commit is in the branch: told": (COMMIT, cluster(tag="1.0.0", written={}), True, ("commit",)),
    "the commit never reached the branch: nothing": (COMMIT, cluster(), False, ()),
    "the commit landed but the object is gone: nothing": (COMMIT, None, True, ()),
}


@pytest.mark.parametrize(("pending", "obj", "in_branch", "told"), ROWS.values(), ids=ROWS.keys())
def test_which_events_a_record_left_by_a_crash_still_owes(
    pending: Pending, obj: dict[str, Any] | None, in_branch: bool, told: tuple[str, ...]
) -> None:
    tells = events_to_tell(pending, obj, in_branch=in_branch)
    names = tuple("commit" if tell.news is News.COMMIT else tell.message.partition(" ")[0] for tell in tells)
    assert names == tuple(APP if name == "web" else name for name in told)


def test_every_told_event_is_one_of_the_records_own() -> None:
    """Never an Event for a move that was not recorded: whatever the cluster shows, tells are a subset."""
    for pending, obj, in_branch, _ in ROWS.values():
        assert set(events_to_tell(pending, obj, in_branch=in_branch)) <= set(move_tells(pending))


def test_an_event_key_names_the_move_and_the_version_it_was_made_from() -> None:
    again = move_tells(MOVES)
    assert move_tells(MOVES) == again, "the same record, the same names"
    later = move_tells(replace(MOVES, base="57"))  # the same move made again from a later resourceVersion
    assert {tell.key for tell in later}.isdisjoint(tell.key for tell in again)
    assert len({tell.key for tell in again}) == 2
    (commit,) = move_tells(COMMIT)
    assert commit.message == f"committed {SHA[:12]} to main: {WEB.summary}"
    assert move_tells(replace(COMMIT, base="b2" * 20))[0].key != commit.key


# --- the file ------------------------------------------------------------------------------------------------


def test_the_file_reads_back_what_was_written(tmp_path: Path) -> None:
    file = JournalFile(tmp_path / "pending-moves.json")
    file.save(Journal([MOVES, COMMIT]).dump())
    assert file.load().entries() == (MOVES, COMMIT)
    assert (tmp_path / "pending-moves.json").stat().st_mode & 0o777 == 0o600


def _document(**changes: Any) -> bytes:
    document = json.loads(Journal([MOVES]).dump())
    document.update(changes)
    return json.dumps(document).encode()


BROKEN = {
    "another version": _document(version=FORMAT_VERSION + 1),
    "another format": _document(format="helmrelease-tag-cache"),
    "truncated": Journal([MOVES]).dump()[:40],
    "not UTF-8": b"\xff\xfe",
    "one bad entry among good": _document(
        entries=[json.loads(Journal([MOVES]).dump())["entries"][0], {"news": "x"}]
    ),
    "a value path that is not strings": _document(
        entries=[{**json.loads(Journal([MOVES]).dump())["entries"][0], "moves": [{"values": [[[1], "x"]]}]}]
    ),
}


@pytest.mark.parametrize("data", BROKEN.values(), ids=BROKEN.keys())
def test_a_file_that_does_not_read_is_discarded_whole_with_one_line(
    data: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pending-moves.json"
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        assert len(JournalFile(path).load()) == 0
    assert [record.getMessage() for record in caplog.records if "discarded" in record.getMessage()], (
        caplog.text
    )


def test_a_missing_file_is_an_empty_journal_and_leftover_temporaries_go(tmp_path: Path) -> None:
    path = tmp_path / "pending-moves.json"
    (tmp_path / ".pending-moves.json.x1y2.tmp").write_bytes(b'{"half')
    assert len(JournalFile(path).load()) == 0
    assert list(tmp_path.iterdir()) == []


def test_the_file_and_the_records_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "pending-moves.json"
    path.write_bytes(b" " * 2048)
    assert len(JournalFile(path, max_bytes=1024).load()) == 0
    journal = Journal(limit=2)
    for uid in ("a", "b", "c"):
        journal.record(replace(MOVES, uid=uid))
    assert [entry.uid for entry in journal.entries()] == ["b", "c"], "the oldest goes first"
    journal.record(replace(MOVES, uid="b", base="99"))
    assert [(entry.uid, entry.base) for entry in journal.entries()] == [("c", "41"), ("b", "99")]
    assert not journal.remove(replace(MOVES, uid="b")), "a newer attempt's record is not removed by an older"


# --- the loop, killed between acting and telling, restarted over the same file ----------------------------


class Killed(BaseException):
    """SIGKILL, as far as the code under test can tell: nothing after it runs (not an Exception it catches)."""


class KillingKube(FakeKube):
    """Kills the sidecar instead of posting the first Event of ``reason``."""

    kill_at: str | None = None

    async def post_event(
        self, ref: Any, event_type: str, reason: str, message: str, *, key: str | None = None
    ) -> None:
        if reason == self.kill_at:
            self.kill_at = None
            raise Killed
        await super().post_event(ref, event_type, reason, message, key=key)


def sidecar(kube: FakeKube, state: Path, repository: FakeRepository | None = None) -> ImagePolicyService:
    """A sidecar (started or restarted) over the state directory ``state``."""
    git = GitWriteback(repository, all_releases=True) if repository is not None else None
    return ImagePolicyService(
        kube,
        FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(3)}}),
        settings=ImagePolicySettings(journal_file=state / "pending-moves.json", git=git),
        metrics=AutomationMetrics.create(CollectorRegistry()),
    )


IMAGE = {"image": {"repository": APP, "tag": "1.0.0"}}


def records(state: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((state / "pending-moves.json").read_bytes())["entries"]
    return entries


async def test_killed_after_the_patch_before_the_event_the_restart_tells_the_move_once(
    tmp_path: Path,
) -> None:
    kube = KillingKube().add(release("web", IMAGE, AUTOMATED))
    kube.kill_at = "ImageUpdated"
    with pytest.raises(Killed):
        await sidecar(kube, tmp_path).run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.5", "patched"
    assert kube.reasons() == [], "not told"
    assert [entry["news"] for entry in records(tmp_path)] == ["moves"]

    restarted = sidecar(kube, tmp_path)
    report = await restarted.run_cycle()
    await restarted.run_cycle()
    assert report.moves == (), "nothing moved again"
    assert kube.reasons() == ["ImageUpdated"]
    assert kube.events[0][3] == f"{APP} 1.0.0 → 1.0.5 (semver:~1.0)"
    assert records(tmp_path) == []
    assert len(kube.patches) == 1


async def test_killed_after_the_event_before_the_record_went_the_restart_does_not_tell_it_again(
    tmp_path: Path,
) -> None:
    kube = FakeKube().add(release("web", IMAGE, AUTOMATED))
    journal = tmp_path / "pending-moves.json"
    recorded: list[bytes] = []
    kube.before_patch = lambda _: recorded.append(journal.read_bytes())
    await sidecar(kube, tmp_path).run_cycle()
    assert kube.reasons() == ["ImageUpdated"]
    journal.write_bytes(recorded[0])  # the removal never reached the disk

    await sidecar(kube, tmp_path).run_cycle()
    assert kube.reasons() == ["ImageUpdated"], "its name was taken: told already"
    assert records(tmp_path) == []


async def test_killed_before_the_patch_landed_the_restart_tells_nothing_it_did_not_do(tmp_path: Path) -> None:
    kube = FakeKube().add(release("web", IMAGE, AUTOMATED))

    def kill(_: FakeKube) -> None:
        raise Killed

    kube.before_patch = kill
    with pytest.raises(Killed):
        await sidecar(kube, tmp_path).run_cycle()
    assert len(records(tmp_path)) == 1
    kube.objects["apps", "web"]["spec"]["values"]["image"]["tag"] = "1.0.3"  # and the user moved it meanwhile

    report = await sidecar(kube, tmp_path).run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.5"
    assert [event[3] for event in kube.events] == [f"{APP} 1.0.3 → 1.0.5 (semver:~1.0)"], "the new move only"
    assert len(report.moves) == 1
    assert records(tmp_path) == []


async def test_a_refused_patch_leaves_no_record_and_a_failed_post_is_told_next_cycle(tmp_path: Path) -> None:
    kube = FakeKube().add(release("web", IMAGE, AUTOMATED))
    kube.patch_error = Conflict("HelmRelease apps/web: the object has been modified", 409)
    service = sidecar(kube, tmp_path)
    await service.run_cycle()
    assert records(tmp_path) == []
    assert kube.reasons() == ["ImageUpdateFailed"]

    kube.patch_error = None
    kube.event_error = ApiUnavailable(
        "Event for HelmRelease apps/web: the Kubernetes API server is unavailable"
    )
    await service.run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.5"
    assert len(records(tmp_path)) == 1, "kept until told"
    kube.event_error = None
    await service.run_cycle()
    await service.run_cycle()
    assert kube.reasons() == ["ImageUpdateFailed", "ImageUpdated"]
    assert records(tmp_path) == []


MANIFEST = {
    "apiVersion": "helm.fluxcd.io/v1",
    "kind": "HelmRelease",
    "metadata": {"name": "web", "namespace": "apps"},
    "spec": {"values": {"image": {"repository": APP, "tag": "1.0.0"}}},
}


@pytest.mark.parametrize("point", ["after-push", "before-push"])
async def test_killed_around_the_push_the_restart_tells_the_commit_once(point: str, tmp_path: Path) -> None:
    tree, state = tmp_path / "tree", tmp_path / "state"
    tree.mkdir()
    (tree / "web.yaml").write_text(json.dumps(MANIFEST))
    repository = FakeRepository(tree)
    kube = KillingKube().add(release("web", IMAGE, AUTOMATED))
    if point == "after-push":
        kube.kill_at = "ImageGitCommitted"
    else:
        repository.push_error = Killed()
    with pytest.raises(Killed):
        await sidecar(kube, state, repository).run_cycle()
    assert kube.values("web")["image"]["tag"] == "1.0.0", "git first"
    assert [entry["news"] for entry in records(state)] == ["commit"]
    if point == "after-push":  # the commit landed; the tree as the branch now holds it
        (tree / "web.yaml").write_text(repository.written[0].text)
    repository.push_error = None
    repository.sha = "b2" * 20  # a commit made again is another commit

    restarted = sidecar(kube, state, repository)
    await restarted.run_cycle()
    await restarted.run_cycle()
    commits = [event[3] for event in kube.events if event[2] == "ImageGitCommitted"]
    landed = "c0ffee" * 2 if point == "after-push" else "b2" * 6
    assert commits == [f"committed {landed} to main: {APP} 1.0.0 → 1.0.5 (semver:~1.0)"]
    assert kube.reasons().count("ImageUpdated") == 1
    assert kube.values("web")["image"]["tag"] == "1.0.5"
    assert records(state) == []
    assert len(repository.pushed) == 1


async def test_a_move_whose_release_failed_unexpectedly_after_the_patch_is_told_next_cycle(
    tmp_path: Path,
) -> None:
    class Flaky(FakeKube):
        broken = True

        async def post_event(
            self, ref: Any, event_type: str, reason: str, message: str, *, key: str | None = None
        ) -> None:
            if self.broken:
                self.broken = False
                raise RuntimeError("a bug")
            await super().post_event(ref, event_type, reason, message, key=key)

    kube = Flaky().add(release("web", IMAGE, AUTOMATED))
    service = sidecar(kube, tmp_path)
    report = await service.run_cycle()
    assert report.failed
    assert kube.values("web")["image"]["tag"] == "1.0.5"
    assert kube.reasons() == []
    await service.run_cycle()
    assert kube.reasons() == ["ImageUpdated"], "the same process settles it: not left in flight"
    assert records(tmp_path) == []
