"""The image-policy loop: every interval, scan the images of automated HelmReleases and move their tags.

One cycle lists the HelmReleases, and for each automated, unlocked one (concurrently, each failure its own):
reads its credentials, asks the registries (``scan``), and when a newer tag qualifies, patches exactly the
value paths of the moved tags with a JSON patch that first tests the values and the resourceVersion it read (so a
lock, a new policy or ``suspend`` set meanwhile is never overwritten). If the user changed the
release meanwhile the API server refuses the patch (a 409, or the same bare 422 it gives an invalid patch: a
re-read tells the two apart); we re-read the release and decide again from what they wrote, so their edit
always survives. With git write-back, the manifests in git are changed first and the
cluster only for what git now holds. The same patch records what it wrote in the release's
``image.helm.fluxcd.io/written.<container>`` annotation: when values later hold a tag behind that record,
someone else set the image back (a ``kubectl edit``, a GitOps apply of an older manifest, a script), and
instead of undoing it the sidecar pauses the image (``paused.<container>``, with who did it and when, from
the object's managedFields) until a person removes the annotation; a Normal Event says so and how to resume.
Every update is an Event (``ImageUpdated``) and a log line, told exactly once across a crash: the moves and
commits under way are recorded in ``--state-dir`` first (``automation.journal``) and the next cycle tells
those a crash interrupted; every
problem a Warning Event, posted once per object while it lasts rather than every cycle; a held release
(not automated, locked) says only what is wrong with how its annotations read, an ignored one nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from helmrelease.adapters.git import GitError
from helmrelease.adapters.kube import AlreadyExists, Conflict, Invalid, KubeError, NotFound, ObjectRef
from helmrelease.adapters.registry import CredentialStore
from helmrelease.api.constants import API_VERSION, KIND
from helmrelease.api.sharding import shard_selector
from helmrelease.automation.credentials import CycleCredentials, PullSecretError, SecretReader
from helmrelease.automation.health import Heartbeat
from helmrelease.automation.journal import (
    Journal,
    JournalFile,
    News,
    Pending,
    PendingMove,
    Tell,
    commit_message,
    events_to_tell,
    move_tells,
)
from helmrelease.automation.lookups import DEFAULT_RECHECK_PERIOD, RecheckBudget
from helmrelease.automation.metrics import AutomationMetrics, Failure, Target
from helmrelease.automation.scan import (
    DEFAULT_PROGRESS_EVERY,
    ImageScanner,
    ScanProgress,
    StepBack,
    TagSource,
)
from helmrelease.automation.soak import FirstSeen, load_first_seen, save_first_seen
from helmrelease.automation.watched import (
    GIT_WRITEBACK_ANNOTATION,
    Hold,
    ImageTarget,
    TagMove,
    WatchedRelease,
    read_release,
    values_hold,
)
from helmrelease.automation.writeback import GitWriteback, write_back
from helmrelease.images.annotations import PAUSED_PREFIX, WRITTEN_PREFIX
from helmrelease.images.manifests import ReleaseId
from helmrelease.images.patch import JsonPatchOperation, annotation_operation, changes_patch, json_pointer
from helmrelease.images.reference import CanonicalName

_log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventReason(StrEnum):
    """Reasons of the Events the sidecar posts on HelmReleases."""

    IMAGE_UPDATED = "ImageUpdated"
    IMAGE_PAUSED = "ImagePaused"
    POLICY_INVALID = "ImagePolicyInvalid"
    AUTOMATION_WARNING = "ImageAutomationWarning"
    SCAN_FAILED = "ImageScanFailed"
    UPDATE_FAILED = "ImageUpdateFailed"
    GIT_COMMITTED = "ImageGitCommitted"
    GIT_FAILED = "ImageGitWritebackFailed"


class ReleaseApi(SecretReader, Protocol):
    """The Kubernetes calls the loop makes (``adapters.kube.KubeClient`` has them)."""

    async def list_helmreleases(
        self, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def json_patch_helmrelease(
        self, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None: ...

    async def post_event(
        self, ref: ObjectRef, event_type: str, reason: str, message: str, *, key: str | None = None
    ) -> None:
        """Raises ``AlreadyExists`` when an Event of that ``key`` was posted before."""
        ...


class TagSourceFactory(Protocol):
    """Makes the per-cycle registry view (``scan.RegistryPool`` does)."""

    def cycle(self) -> TagSource: ...

    async def checkpoint(self) -> None:
        """Persist what the cycle learnt (the tag cache); never raises."""
        ...


@dataclass(frozen=True)
class ImagePolicySettings:
    """How the loop runs. No namespaces: the whole cluster. ``conflict_attempts`` bounds the re-reads of a
    release that keeps changing under us within one cycle. ``shard``: the HelmReleases of that shard only, as the
    operator next to us (``api.sharding``; None: those without the shard label)."""

    interval: float = 300.0
    namespaces: tuple[str, ...] = ()
    shard: str | None = None
    conflict_attempts: int = 3
    git: GitWriteback | None = None
    #: Where the first sight of tags (soak time) is kept across restarts; None: in memory only.
    first_seen_file: Path | None = None
    #: Where the moves and commits under way are recorded until told (``automation.journal``); None: in memory.
    journal_file: Path | None = None
    tag_recheck_period: float = DEFAULT_RECHECK_PERIOD
    progress_every: int = DEFAULT_PROGRESS_EVERY

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        if self.tag_recheck_period <= 0:
            raise ValueError("tag_recheck_period must be positive")
        if self.progress_every < 1:
            raise ValueError("progress_every must be at least 1")
        if self.conflict_attempts < 1:
            raise ValueError("conflict_attempts must be at least 1")


@dataclass(frozen=True)
class ReleaseOutcome:
    """What one cycle did to one release."""

    release: ReleaseId
    hold: Hold | None = None
    moves: tuple[TagMove, ...] = ()
    failures: tuple[Failure, ...] = ()
    commit: str | None = None
    #: Containers paused this cycle because someone set them back.
    paused: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pause:
    """An image set back behind the sidecar's last write: the annotation that pauses it and the Event."""

    target: ImageTarget
    step_back: StepBack
    note: str

    @property
    def key(self) -> str:
        return PAUSED_PREFIX + self.target.container

    def operations(self) -> list[JsonPatchOperation]:
        """Test that values still hold what we judged, then pause; the record becomes what values hold, so
        removing the pause resumes from there (and is not taken for a step back again)."""
        image = self.target.image
        tests: list[JsonPatchOperation] = [
            {
                "op": "test",
                "path": json_pointer(location.path, base="/spec/values"),
                "value": location.written,
            }
            for location in (image.tag_location, image.digest_location)
            if location is not None
        ]
        return [
            *tests,
            annotation_operation(self.key, self.note),
            annotation_operation(WRITTEN_PREFIX + self.target.container, self.step_back.current),
        ]

    @property
    def message(self) -> str:
        container = self.target.container
        return (
            f"{container}: {self.note}, behind {self.step_back.written} that image automation wrote; "
            f"automation of {container} is paused so that choice stands. To resume, remove the annotation: "
            f"kubectl annotate helmrelease {{name}} {self.key}-"
        )


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did; ``failed`` when anything could not be listed, decided or written."""

    releases: tuple[ReleaseOutcome, ...]
    list_failures: int
    seconds: float

    @property
    def moves(self) -> tuple[TagMove, ...]:
        return tuple(move for outcome in self.releases for move in outcome.moves)

    @property
    def failed(self) -> bool:
        return self.list_failures > 0 or any(outcome.failures for outcome in self.releases)


@dataclass(frozen=True)
class ObjectKey:
    """One HelmRelease object: a release deleted and created again under its name is another object."""

    release: ReleaseId
    uid: str


@dataclass
class RepeatFilter:
    """Says which messages are new for an object: posted once while they last, again once they went away
    and came back (a message names the offending value, so an edit that changes it is new too).

    Memory holds only what the last complete cycle saw: ``end_cycle`` forgets the messages objects no
    longer have. A cycle that could not list every release (``complete=False``) keeps what it did not see,
    so a failed list does not make every warning of those releases new again.
    """

    _previous: dict[ObjectKey, set[str]] = field(default_factory=dict)
    _current: dict[ObjectKey, set[str]] = field(default_factory=dict)

    def is_new(self, key: ObjectKey, message: str) -> bool:
        seen = message in self._previous.get(key, set()) or message in self._current.get(key, set())
        self._current.setdefault(key, set()).add(message)
        return not seen

    def seen(self, key: ObjectKey) -> None:
        """``key`` was looked at this cycle, whether or not it had anything to say."""
        self._current.setdefault(key, set())

    def end_cycle(self, *, complete: bool = True) -> None:
        if not complete:
            for key, messages in self._previous.items():
                self._current.setdefault(key, messages)
        self._previous, self._current = {k: v for k, v in self._current.items() if v}, {}


@dataclass(frozen=True)
class _Retry:
    """The patch was refused for a concurrent edit: decide again from the release as it is now."""

    view: WatchedRelease
    commit: str | None


@dataclass(frozen=True)
class _Cycle:
    """What the releases of one cycle share: registry memos and credential reads; ``only`` limits a rescan
    on push to the images of the pushed repositories."""

    scanner: ImageScanner
    credentials: CycleCredentials
    only: frozenset[CanonicalName] | None = None

    def wants(self, target: ImageTarget) -> bool:
        return self.only is None or target.image.ref.canonical in self.only


def _uses(obj: Mapping[str, Any], cycle: _Cycle) -> bool:
    """Whether the release has an image ``cycle`` wants; one that cannot be read is processed (and reported)."""
    try:
        return any(map(cycle.wants, read_release(obj).targets))
    except Exception:
        return True


def _object_ref(view: WatchedRelease) -> ObjectRef:
    return ObjectRef(API_VERSION, KIND, view.release.namespace, view.release.name, view.uid)


def _object_key(view: WatchedRelease) -> ObjectKey:
    return ObjectKey(view.release, view.uid)


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return str(version) if version else None


def _release_id(obj: Mapping[str, Any]) -> ReleaseId:
    """Namespace and name however broken the rest of the object is (for the log of a failure)."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return ReleaseId(str(metadata.get("namespace", "")), str(metadata.get("name", "")))


class ImagePolicyService:
    """The loop, with every dependency given: kube API, registries, metrics and settings."""

    def __init__(
        self,
        kube: ReleaseApi,
        registries: TagSourceFactory,
        *,
        settings: ImagePolicySettings,
        metrics: AutomationMetrics,
        operator_credentials: CredentialStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_seen: FirstSeen | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.registries = registries
        self.settings = settings
        self.metrics = metrics
        self.operator_credentials = operator_credentials or CredentialStore()
        self._clock = clock
        self._wall_clock = wall_clock
        self.first_seen = first_seen if first_seen is not None else FirstSeen(wall_clock)
        if first_seen is None and settings.first_seen_file is not None:
            load_first_seen(settings.first_seen_file, self.first_seen)
        self._journal_file = JournalFile(settings.journal_file) if settings.journal_file else None
        self.journal = self._journal_file.load() if self._journal_file else Journal()
        self._journal_lock = asyncio.Lock()
        #: Records of this process's attempts still running: not a crash's leftovers, not settled by a cycle.
        self._in_flight: set[tuple[str, News]] = set()
        self._repeats = RepeatFilter()
        self.heartbeat = Heartbeat(settings.interval, clock())

    # --- the loop --------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle every ``interval`` seconds (counted from the end of a cycle) until ``stop`` is set."""
        self.heartbeat.running = True
        try:
            while not stop.is_set():
                await self.run_cycle()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.interval)
        finally:
            self.heartbeat.running = False

    async def run_cycle(self) -> CycleReport:
        """One scan of every HelmRelease in scope; never raises for a single release's trouble."""
        started = self._clock()
        scanner = ImageScanner(
            self.registries.cycle(),
            recheck=RecheckBudget(self.settings.interval, self.settings.tag_recheck_period),
            observe=ScanProgress(self.metrics, self.settings.progress_every, self._clock),
            first_seen=self.first_seen,
            clock=self._wall_clock,
        )
        cycle = _Cycle(scanner, CycleCredentials(self.kube, self.operator_credentials))
        objects, list_failures = await self._list_releases()
        await self._settle(objects, complete=list_failures == 0)
        outcomes = await asyncio.gather(*(self._process_guarded(obj, cycle) for obj in objects))
        await self.registries.checkpoint()
        self._repeats.end_cycle(complete=list_failures == 0)
        await self._keep_first_seen()
        seconds = self._clock() - started
        self.metrics.cycle_seconds.observe(seconds)
        self.metrics.last_cycle_finished.set(time.time())
        self.heartbeat.last_finished = self._clock()
        report = CycleReport(tuple(outcomes), list_failures, seconds)
        _log.info(
            "scan cycle: %d HelmReleases, %d tag updates, %s in %.1fs",
            len(outcomes),
            len(report.moves),
            "with failures" if report.failed else "no failures",
            seconds,
        )
        return report

    async def _keep_first_seen(self) -> None:
        path = self.settings.first_seen_file
        if path is None or not self.first_seen.changed:
            return
        try:
            await asyncio.to_thread(save_first_seen, path, self.first_seen)
        except OSError as error:
            _log.warning("cannot write %s: %s; soak time restarts if the sidecar does", path, error)

    async def rescan(self, names: frozenset[CanonicalName]) -> CycleReport:
        """Scan only the images named ``names``, in the releases that use them (a registry said they were
        pushed); the other images and releases wait for the cycle. Never raises for one release's trouble."""
        started = self._clock()
        cycle = _Cycle(
            ImageScanner(
                self.registries.cycle(),
                recheck=RecheckBudget(self.settings.interval, self.settings.tag_recheck_period),
                first_seen=self.first_seen,
                clock=self._wall_clock,
            ),
            CycleCredentials(self.kube, self.operator_credentials),
            only=names,
        )
        objects, list_failures = await self._list_releases()
        using = [obj for obj in objects if _uses(obj, cycle)]
        outcomes = await asyncio.gather(*(self._process_guarded(obj, cycle) for obj in using))
        report = CycleReport(tuple(outcomes), list_failures, self._clock() - started)
        _log.info(
            "push rescan of %s: %d HelmReleases, %d tag updates, %s in %.1fs",
            ", ".join(sorted(map(str, names))),
            len(outcomes),
            len(report.moves),
            "with failures" if report.failed else "no failures",
            report.seconds,
        )
        return report

    async def _list_releases(self) -> tuple[list[Mapping[str, Any]], int]:
        scopes: Sequence[str | None] = self.settings.namespaces or (None,)
        results = await asyncio.gather(
            *(
                self.kube.list_helmreleases(namespace, label_selector=shard_selector(self.settings.shard))
                for namespace in scopes
            ),
            return_exceptions=True,
        )
        objects: list[Mapping[str, Any]] = []
        failures = 0
        for scope, result in zip(scopes, results, strict=True):
            if isinstance(result, KubeError):
                failures += 1
                self.metrics.failed(Failure.LIST)
                _log.error("cannot list HelmReleases in %s: %s", scope or "all namespaces", result)
            elif isinstance(result, BaseException):
                raise result
            else:
                objects.extend(result)
        return objects, failures

    async def _process_guarded(self, obj: Mapping[str, Any], cycle: _Cycle) -> ReleaseOutcome:
        """A bug or an unexpected answer for one release must not end the cycle for all the others."""
        try:
            outcome = await self._process(obj, cycle)
        except Exception:
            release = _release_id(obj)
            _log.exception("%s: image automation failed unexpectedly", release)
            uid = (
                str(obj.get("metadata", {}).get("uid", ""))
                if isinstance(obj.get("metadata"), Mapping)
                else ""
            )
            self._in_flight -= {(uid, news) for news in News}  # what it recorded: the next cycle settles it
            outcome = ReleaseOutcome(release, failures=(Failure.INTERNAL,))
        for failure in outcome.failures:
            self.metrics.failed(failure)
        return outcome

    # --- one release -----------------------------------------------------------------------------------

    async def _process(self, obj: Mapping[str, Any], cycle: _Cycle) -> ReleaseOutcome:
        view = read_release(obj)
        self._repeats.seen(_object_key(view))
        if view.hold is Hold.IGNORED:
            return ReleaseOutcome(view.release, hold=view.hold)
        if view.hold is Hold.SUSPENDED and self._repeats.is_new(_object_key(view), Hold.SUSPENDED.value):
            # Said once while it lasts (the repeat filter forgets it once the release is resumed).
            _log.info(
                "%s: suspended (spec.suspend: true): its image tags are not moved until it is resumed",
                view.release,
            )
        if view.hold is not None:
            # Nothing will change, so only how the annotations were read is news: it may be why (a
            # ``fluxcd.io/automated: "yes"`` is off). Policies and images wait until they can matter.
            for message in view.settings.warnings:
                await self._warn(view, EventReason.AUTOMATION_WARNING, message)
            return ReleaseOutcome(view.release, hold=view.hold)
        configuration = await self._report_configuration(view)
        commit: str | None = None
        for attempt in range(1, self.settings.conflict_attempts + 1):
            result = await self._attempt(view, cycle, configuration, commit)
            if isinstance(result, ReleaseOutcome):
                return result
            _log.info("%s changed while we decided; deciding again (attempt %d)", view.release, attempt)
            view, commit = result.view, result.commit
        await self._warn(
            view,
            EventReason.UPDATE_FAILED,
            f"the HelmRelease changed on each of {self.settings.conflict_attempts} attempts to update its "
            "image tags; trying again next cycle",
        )
        return ReleaseOutcome(view.release, failures=(*configuration, Failure.CONFLICT), commit=commit)

    async def _attempt(
        self, view: WatchedRelease, cycle: _Cycle, configuration: Sequence[Failure], commit: str | None
    ) -> ReleaseOutcome | _Retry:
        """Decide, write git if wanted, patch; a refusal for a concurrent edit is a ``_Retry`` with the
        release as it is now."""
        failures = list(configuration)
        if view.hold is not None:  # locked (or no longer automated) by the user during this cycle
            return ReleaseOutcome(view.release, view.hold, failures=tuple(failures), commit=commit)
        moves, pauses = await self._decide(view, cycle, failures)
        if moves and self.settings.git is not None and self.settings.git.wanted_for(view):
            moves, committed = await self._write_git(self.settings.git, view, moves, failures)
            commit = committed or commit
        changes = [change for move in moves for change in move.changes]
        operations = [
            *(view.precondition if changes or pauses else []),
            *changes_patch(changes),
            *(annotation_operation(WRITTEN_PREFIX + m.target.container, m.new_version) for m in moves),
            *(operation for pause in pauses for operation in pause.operations()),
        ]
        pending = self._pending(News.MOVES, view, view.resource_version or "", moves) if moves else None
        try:
            if pending is not None:
                await self._record(pending)
            if operations:
                await self.kube.json_patch_helmrelease(
                    view.release.namespace, view.release.name, [dict(op) for op in operations]
                )
        except (Conflict, Invalid) as error:
            if pending is not None:  # refused: the move was not made
                await self._settled(pending)
            try:
                obj = await self.kube.get_helmrelease(view.release.namespace, view.release.name)
            except NotFound:
                return ReleaseOutcome(view.release, failures=tuple(failures), commit=commit)
            written_since = _resource_version(obj) != view.resource_version
            if (
                not isinstance(error, Invalid)
                or written_since
                or view.changed_in(obj)
                or not values_hold(obj, changes)
            ):
                return _Retry(read_release(obj), commit)
            failures.append(Failure.PATCH)
            await self._warn(view, EventReason.UPDATE_FAILED, f"cannot update the image tags: {error}")
            return ReleaseOutcome(view.release, failures=tuple(failures), commit=commit)
        except KubeError as error:
            if pending is not None:  # it may have landed: the next cycle looks
                self._in_flight.discard(pending.slot)
            failures.append(Failure.PATCH)
            await self._warn(view, EventReason.UPDATE_FAILED, f"cannot update the image tags: {error}")
            return ReleaseOutcome(view.release, failures=tuple(failures), commit=commit)
        if pending is not None:
            for move in moves:
                _log.info("%s %s: %s", view.release, move.target.container, move.summary)
            await self._tell(pending, move_tells(pending))
        if moves:
            self.metrics.updated(Target.CLUSTER, len(moves))
        for pause in pauses:
            message = pause.message.replace("{name}", view.release.name)
            _log.info("%s %s", view.release, message)
            await self._post(view, NORMAL, EventReason.IMAGE_PAUSED, message)
        return ReleaseOutcome(
            view.release,
            moves=tuple(moves),
            failures=tuple(failures),
            commit=commit,
            paused=tuple(pause.target.container for pause in pauses),
        )

    async def _report_configuration(self, view: WatchedRelease) -> list[Failure]:
        """Warn about what the user should fix; the policy errors count as failures."""
        failures: list[Failure] = []
        for message in view.policy_errors:
            failures.append(Failure.POLICY)
            await self._warn(view, EventReason.POLICY_INVALID, message)
        warnings = list(view.warnings)
        if view.git_writeback and self.settings.git is None:
            warnings.append(
                f'{GIT_WRITEBACK_ANNOTATION}: "true" asks for git write-back, but the sidecar has no git '
                "repository configured; updating the cluster only"
            )
        for message in warnings:
            await self._warn(view, EventReason.AUTOMATION_WARNING, message)
        return failures

    async def _decide(
        self, view: WatchedRelease, cycle: _Cycle, failures: list[Failure]
    ) -> tuple[list[TagMove], list[Pause]]:
        targets = [target for target in view.changeable if cycle.wants(target)]
        if not targets:
            return [], []
        try:
            credentials = await cycle.credentials.for_release(view)
        except PullSecretError as error:
            failures.append(Failure.PULL_SECRET)
            await self._warn(view, EventReason.SCAN_FAILED, str(error))
            return [], []
        scans = await asyncio.gather(*(cycle.scanner.scan(target, credentials) for target in targets))
        moves = []
        pauses = []
        for scan in scans:
            if scan.step_back is not None:
                pauses.append(self._pause(view, scan.target, scan.step_back))
            if scan.error is not None:
                failures.append(Failure.REGISTRY)
                await self._warn(
                    view,
                    EventReason.SCAN_FAILED,
                    f"{scan.target.container}: {scan.error}",
                    key=f"{scan.target.container}: {scan.error_key}" if scan.error_key else None,
                )
            elif scan.decision is not None:
                _log.debug("%s %s: %s", view.release, scan.target.container, scan.decision.detail)
            if scan.move is not None:
                moves.append(scan.move)
        return moves, pauses

    def _pause(self, view: WatchedRelease, target: ImageTarget, step_back: StepBack) -> Pause:
        setter = view.setter_of(target)
        manager = setter.manager if setter is not None else "someone else"
        moment = (setter.time if setter is not None else None) or self._wall_clock().isoformat(
            timespec="seconds"
        ).replace("+00:00", "Z")
        return Pause(target, step_back, f"{step_back.current} set by {manager} at {moment}")

    async def _write_git(
        self, git: GitWriteback, view: WatchedRelease, moves: Sequence[TagMove], failures: list[Failure]
    ) -> tuple[list[TagMove], str | None]:
        """Commit ``moves`` first; only what git holds afterwards goes on to the cluster."""
        recorded: list[Pending] = []

        async def record_commit(sha: str, committing: Sequence[TagMove]) -> None:
            """Before the push: a restart that finds the commit in the branch tells it."""
            pending = self._pending(News.COMMIT, view, sha, committing, branch=git.repository.branch)
            recorded.append(pending)
            await self._record(pending)

        try:
            result = await write_back(git, view.release, moves, record_commit)
        except GitError as error:
            if recorded:  # the push may have landed unheard: the next cycle looks
                self._in_flight.discard(recorded[-1].slot)
            failures.append(Failure.GIT)
            await self._warn(view, EventReason.GIT_FAILED, f"{error}; the cluster is not updated either")
            return [], None
        for note in result.notes:
            await self._warn(view, EventReason.GIT_FAILED, f"not written to git, so not updated: {note}")
        if result.notes:
            failures.append(Failure.GIT)
        sha = None
        if result.commit is not None:
            sha = result.commit.sha
            message = commit_message(sha, result.commit.branch, [move.summary for move in result.committed])
            _log.info("%s: %s", view.release, message)
            pending = recorded[-1] if recorded and recorded[-1].base == sha else None
            if pending is not None:
                await self._tell(pending, move_tells(pending))
            else:  # a committer that did not say what it pushes: told, not journalled
                await self._post(view, NORMAL, EventReason.GIT_COMMITTED, message)
            self.metrics.updated(Target.GIT, len(result.committed))
        return list(result.in_git), sha

    # --- news owed across a crash (automation.journal) -----------------------------------------------

    def _pending(
        self, news: News, view: WatchedRelease, base: str, moves: Sequence[TagMove], *, branch: str = ""
    ) -> Pending:
        return Pending(
            news,
            view.release.namespace,
            view.release.name,
            view.uid,
            base,
            tuple(
                PendingMove(
                    move.target.container,
                    tuple((change.path, change.new) for change in move.changes),
                    move.old_version,
                    move.new_version,
                    move.summary,
                )
                for move in moves
            ),
            branch,
        )

    async def _record(self, pending: Pending) -> None:
        """Before acting: what a crash must not leave untold."""
        self.journal.record(pending)
        self._in_flight.add(pending.slot)
        await self._save_journal()

    async def _settled(self, pending: Pending) -> None:
        """Told, or not made: the record goes."""
        self._in_flight.discard(pending.slot)
        if self.journal.remove(pending):
            await self._save_journal()

    async def _save_journal(self) -> None:
        if self._journal_file is None:
            return
        async with self._journal_lock:  # one write at a time, each of the journal as it is then
            data = self.journal.dump()
            try:
                await asyncio.to_thread(self._journal_file.save, data)
            except OSError as error:
                _log.warning(
                    "cannot write %s: %s; a move interrupted by a crash now would not be told",
                    self._journal_file.path,
                    error,
                )

    async def _tell(self, pending: Pending, tells: Sequence[Tell]) -> None:
        """Post ``tells`` (each once: an Event already there counts as told); the record goes once all are
        told, else it stays for the next cycle to post the rest."""
        ref = ObjectRef(API_VERSION, KIND, pending.namespace, pending.name, pending.uid)
        release = ReleaseId(pending.namespace, pending.name)
        told = True
        for tell in tells:
            reason = EventReason.IMAGE_UPDATED if tell.news is News.MOVES else EventReason.GIT_COMMITTED
            told = await self._post_to(ref, release, NORMAL, reason, tell.message, key=tell.key) and told
        if told:
            await self._settled(pending)
        else:
            self._in_flight.discard(pending.slot)

    async def _settle(self, objects: Sequence[Mapping[str, Any]], *, complete: bool) -> None:
        """Tell what the records a crash (or a failed post) left still owe, drop those whose move was not
        made; a record whose object was not listed waits while a list failed."""
        if not len(self.journal):
            return
        by_uid: dict[str, Mapping[str, Any]] = {}
        for listed in objects:
            metadata = listed.get("metadata")
            if isinstance(metadata, Mapping) and metadata.get("uid"):
                by_uid[str(metadata["uid"])] = listed
        for pending in self.journal.entries():
            if pending.slot in self._in_flight:
                continue
            obj = by_uid.get(pending.uid)
            if obj is None and not complete:
                continue
            in_branch = False
            if pending.news is News.COMMIT and obj is not None and self.settings.git is not None:
                try:
                    in_branch = await self.settings.git.repository.branch_holds(pending.base)
                except GitError as error:
                    _log.warning(
                        "%s/%s: cannot tell whether commit %s reached the branch: %s; asking again next cycle",
                        pending.namespace,
                        pending.name,
                        pending.base[:12],
                        error,
                    )
                    continue
            tells = events_to_tell(pending, obj, in_branch=in_branch)
            if tells:
                _log.info(
                    "%s/%s: telling %d %s interrupted by a restart",
                    pending.namespace,
                    pending.name,
                    len(tells),
                    "move(s)" if pending.news is News.MOVES else "commit",
                )
                await self._tell(pending, tells)
            else:
                _log.info(
                    "%s/%s: the %s recorded before a restart did not happen; deciding afresh",
                    pending.namespace,
                    pending.name,
                    "tag move" if pending.news is News.MOVES else f"commit {pending.base[:12]}",
                )
                await self._settled(pending)

    # --- events ----------------------------------------------------------------------------------------

    async def _warn(
        self, view: WatchedRelease, reason: EventReason, message: str, *, key: str | None = None
    ) -> None:
        """Log and post an Event when the problem is new for this release; while it lasts, log at debug.

        ``key`` names the problem when the message carries details that change while it lasts (the
        registry's own wording); by default the message is the key."""
        if not self._repeats.is_new(_object_key(view), f"{reason}: {key if key is not None else message}"):
            _log.debug("%s: %s (still)", view.release, message)
            return
        _log.warning("%s: %s", view.release, message)
        await self._post(view, WARNING, reason, message)

    async def _post(self, view: WatchedRelease, event_type: str, reason: EventReason, message: str) -> None:
        await self._post_to(_object_ref(view), view.release, event_type, reason, message)

    async def _post_to(
        self,
        ref: ObjectRef,
        release: ReleaseId,
        event_type: str,
        reason: EventReason,
        message: str,
        *,
        key: str | None = None,
    ) -> bool:
        """Post one Event; whether it is there now (posted, or found posted before under ``key``)."""
        try:
            await self.kube.post_event(ref, event_type, reason.value, message, key=key)
        except AlreadyExists:
            _log.info("%s: Event %s was posted before the restart", release, reason)
        except KubeError as error:
            _log.warning("%s: cannot post Event %s: %s", release, reason, error)
            return False
        return True
