"""Asking registries which tags an image could move to, at the least cost a scan cycle allows.

Costs: a repository's tags are listed once per cycle and credentials (``ScanCycle``), however many releases
use it; build times are needed only for ``created`` ordering, only for tags the policy admits (and the
current one), and of those only the few ``lookups.plan_lookups`` names are asked for (new tags, the current
tag, the best candidate, a rolling slice): the rest come from the pool's tag cache, kept in the state
directory across restarts (``adapters.registry.tagcache``). The registry clients keep manifests and config
blobs cached by digest, so a re-check of an unchanged tag costs one HEAD. A client per distinct credentials
keeps one release's secret from ever being sent on behalf of another, and keeps a 401 for one from being
remembered for all.

Beyond choosing a tag, a scan reads what the newer features need: build times also for soak time
(``min-age``), the digest of the tag to write for a pinned image (one HEAD: a tag pushed again with other
content is a move of its own), and whether values were set back behind what the sidecar last wrote there
(a ``StepBack``, which pauses the image instead of moving it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from helmrelease.adapters.registry import (
    BasicCredentials,
    CredentialProvider,
    RegistryClient,
    RegistryConfig,
    RegistryError,
    RegistryMetrics,
    RegistryNotFound,
    ScanCycle,
)
from helmrelease.adapters.registry.client import SessionFactory
from helmrelease.adapters.registry.tagcache import TagCache, TagCacheFile, TagRecord
from helmrelease.automation.lookups import KnownBuild, RecheckBudget, plan_lookups, unconfirmed_best
from helmrelease.automation.metrics import AutomationMetrics
from helmrelease.automation.soak import FirstSeen
from helmrelease.automation.watched import ImageTarget, TagMove, tag_move
from helmrelease.images.policy import TagOrder
from helmrelease.images.reference import CanonicalName
from helmrelease.images.select import TagCandidate, UpdateDecision, is_step_back, rank_tags, select_update

_log = logging.getLogger(__name__)

DEFAULT_SAVE_EVERY = 60.0  # seconds between writes of the tag cache during a cycle
DEFAULT_PROGRESS_EVERY = 100  # images between progress log lines


class TagSource(Protocol):
    """What a scan asks of registries, on behalf of the given credentials."""

    async def list_tags(
        self, name: CanonicalName, credentials: BasicCredentials | None
    ) -> tuple[str, ...]: ...

    async def image_created(
        self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
    ) -> datetime | None: ...

    async def tag_digest(
        self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
    ) -> str: ...

    def known_builds(self, name: CanonicalName) -> Mapping[str, KnownBuild]:
        """The tag cache's records of ``name`` as the cycle found them (after its tag list)."""
        ...


@dataclass(frozen=True)
class _FixedCredentials:
    """A client's only credentials: the pool routes each image to the client holding its credentials."""

    credentials: BasicCredentials | None

    def credentials_for(self, name: CanonicalName) -> BasicCredentials | None:
        return self.credentials


class RegistryPool:
    """Registry clients that live as long as the sidecar (their digest caches make later cycles cheap).

    Per-registry limits apply per client, so a registry reached with two different credentials gets at
    most twice the configured concurrency.
    """

    def __init__(
        self,
        config: RegistryConfig,
        metrics: RegistryMetrics,
        *,
        session_factory: SessionFactory | None = None,
        state: TagCacheFile | None = None,
        save_every: float = DEFAULT_SAVE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._session_factory = session_factory
        self._clients: dict[BasicCredentials | None, RegistryClient] = {}
        self._state = state
        # One tag cache for every set of credentials: a cycle only reads a repository's records after
        # listing its tags with the caller's own credentials, and the records say no more than that list
        # and the manifests the caller could read.
        self.tags = state.load() if state is not None else TagCache()
        self._save_every = save_every
        self._clock = clock
        self._last_save = clock()
        self._saving: asyncio.Task[None] | None = None

    def client_for(self, credentials: BasicCredentials | None) -> RegistryClient:
        client = self._clients.get(credentials)
        if client is None:
            provider = _FixedCredentials(credentials)
            if self._session_factory is None:
                client = RegistryClient(self.config, provider, self.metrics)
            else:
                client = RegistryClient(
                    self.config, provider, self.metrics, session_factory=self._session_factory
                )
            self._clients[credentials] = client
        return client

    def cycle(self) -> PoolCycle:
        """A ``TagSource`` for one scan cycle: tag lists are memoised until it is dropped."""
        return PoolCycle(self)

    def recorded(self) -> None:
        """A record changed: write the cache now and then during a long cycle (a cold one at 10 requests
        per second takes hours; a restart in its middle should not lose what it found)."""
        if self._clock() - self._last_save >= self._save_every and (
            self._saving is None or self._saving.done()
        ):
            self._saving = asyncio.create_task(self.checkpoint(), name="tag-cache-save")

    async def checkpoint(self) -> None:
        """Write the tag cache to the state directory if it changed; a failure is logged, never raised (the
        cache is an optimisation: the next cycle simply costs more)."""
        self._last_save = self._clock()
        if self._state is None or not self.tags.changed:
            return
        data = self.tags.dump()  # on the loop: the cache must not change while it is serialised
        try:
            await asyncio.to_thread(self._state.save, data)
        except OSError as error:
            self.tags.changed = True
            _log.warning("cannot write the tag cache %s: %s", self._state.path, error)

    async def close(self) -> None:
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)
        await self.checkpoint()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class PoolCycle:
    """One cycle's ``ScanCycle`` per set of credentials, over the pool's long-lived clients."""

    def __init__(self, pool: RegistryPool) -> None:
        self._pool = pool
        self._scans: dict[BasicCredentials | None, ScanCycle] = {}
        self._known: dict[CanonicalName, dict[str, TagRecord]] = {}

    def _scan(self, credentials: BasicCredentials | None) -> ScanCycle:
        scan = self._scans.get(credentials)
        if scan is None:
            scan = self._scans[credentials] = ScanCycle(self._pool.client_for(credentials))
        return scan

    async def list_tags(self, name: CanonicalName, credentials: BasicCredentials | None) -> tuple[str, ...]:
        tags = await self._scan(credentials).list_tags(name)
        if name not in self._known:
            self._pool.tags.retain(name, tags)
            self._known[name] = dict(self._pool.tags.records(name))
        return tags

    def known_builds(self, name: CanonicalName) -> Mapping[str, TagRecord]:
        return self._known.get(name, {})

    async def image_created(
        self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
    ) -> datetime | None:
        record = await self._scan(credentials).resolve_tag(name, tag, self._pool.tags.get(name, tag))
        self._pool.tags.put(name, tag, record)
        self._pool.recorded()
        known = self._known.get(name)
        if known is not None and tag not in known:
            # New this cycle: later images of the repository need not look it up (or queue to) again.
            # Re-checked tags keep their cycle-start record, so images pick the same rolling slice.
            known[tag] = record
        return record.created

    async def tag_digest(self, name: CanonicalName, tag: str, credentials: BasicCredentials | None) -> str:
        return await self._scan(credentials).tag_digest(name, tag)


@dataclass(frozen=True)
class StepBack:
    """Values hold ``current``, which ranks behind ``written``, what the sidecar itself last wrote there:
    someone else set the image back, and the sidecar pauses it rather than undo their choice."""

    current: str
    written: str


@dataclass(frozen=True)
class ImageScan:
    """What the registry offers one image: the newest tag its policy admits and whether to move to it.

    ``decision`` is None when the image cannot be moved (no tag location) or was not scanned (a policy that
    does not parse, a registry error: ``error`` says which).
    """

    target: ImageTarget
    newest: TagCandidate | None = None
    decision: UpdateDecision | None = None
    error: str | None = None
    #: What stays the same while the same failure lasts (``RegistryError.identity``); None: the ``error`` text.
    error_key: str | None = None
    #: For a pinned image: the digest to write with the chosen tag (or with the current one, pushed again).
    digest: str | None = None
    step_back: StepBack | None = None

    @property
    def move(self) -> TagMove | None:
        if self.decision is None or self.step_back is not None or self.target.paused is not None:
            return None
        image = self.target.image
        if self.target.pin_digest:
            if self.digest is None:
                return None
            tag = self.decision.new_tag or image.ref.tag
            if tag is None or (tag == image.ref.tag and self.digest == image.ref.digest):
                return None
            return tag_move(self.target, tag, self.digest)
        if self.decision.new_tag is None:
            return None
        return tag_move(self.target, self.decision.new_tag)


async def _build_times(
    source: TagSource,
    name: CanonicalName,
    tags: Sequence[str],
    credentials: BasicCredentials | None,
    width: int,
) -> dict[str, datetime | None]:
    """Build times of ``tags``, at most ``width`` lookups at a time (a coroutine per tag for every release
    at once would hold hundreds of MiB on a big cluster). A tag deleted since the listing has none; any other
    registry failure fails the whole image (its first error is raised), since a partial view could pick
    wrongly."""
    times: dict[str, datetime | None] = {}
    failures: list[RegistryError] = []
    pending = iter(tags)

    async def look_up() -> None:
        for tag in pending:
            if failures:
                return
            try:
                times[tag] = await source.image_created(name, tag, credentials)
            except RegistryNotFound:
                times[tag] = None
            except RegistryError as error:
                failures.append(error)

    await asyncio.gather(*(look_up() for _ in range(min(width, len(tags)))))
    if failures:
        raise failures[0]
    return times


def needs_build_times(order: TagOrder) -> bool:
    """Only ``created`` ordering reads manifests and config blobs; the others rank the tag names alone."""
    return order is TagOrder.CREATED


DEFAULT_LOOKUP_WIDTH = 16
#: Repositories per registry host whose many new tags are read at once: the rest queue in order, so a cold
#: cycle finishes (and decides) repositories one after another instead of all of them at its very end.
BULK_REPOSITORIES_PER_HOST = 2

ScanObserver = Callable[[ImageScan], None]


class ImageScanner:
    """Scans images against a ``TagSource``; knows which registry calls each tag order needs.

    ``lookup_width`` bounds the build-time lookups in flight per image; the registry client's own per-host
    limits decide how many requests actually go out. ``recheck`` sizes the rolling re-check of cached tags
    (``lookups``); without it every eligible tag is looked up each cycle. ``observe`` hears of every image
    as soon as it is decided (for progress reporting).

    An image whose lookups are few (known tags, re-checks, tags another image resolved this cycle) goes at
    once; one with more new tags than ``lookup_width`` waits until its repository has one of
    ``BULK_REPOSITORIES_PER_HOST`` places on its registry host (the images of one repository share its
    place), so images whose tags are known are never held back by a repository still being read, and a slow
    registry only holds back itself.
    """

    def __init__(
        self,
        source: TagSource,
        *,
        lookup_width: int = DEFAULT_LOOKUP_WIDTH,
        recheck: RecheckBudget | None = None,
        observe: ScanObserver | None = None,
        first_seen: FirstSeen | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if lookup_width < 1:
            raise ValueError("lookup_width must be at least 1")
        self.source = source
        self.lookup_width = lookup_width
        self.recheck = recheck
        self._observe = observe
        self._places: dict[str, asyncio.Semaphore] = {}
        self._admissions: dict[CanonicalName, _Admission] = {}
        self.first_seen = first_seen
        self._clock = clock or (lambda: datetime.now(UTC))

    async def scan(self, target: ImageTarget, credentials: CredentialProvider) -> ImageScan:
        """The registry's view of ``target``; registry failures come back as ``error``, not raised."""
        result = await self._scan(target, credentials)
        if self._observe is not None and (target.policy is not None and target.order is not None):
            self._observe(result)
        return result

    async def _scan(self, target: ImageTarget, credentials: CredentialProvider) -> ImageScan:
        policy, order = target.policy, target.order
        if policy is None or order is None:
            return ImageScan(target, error=target.policy_error)
        name = target.image.ref.canonical
        current = target.image.ref.tag
        written_tag = target.written.partition("@")[0] if target.written else None
        secret = credentials.credentials_for(name)
        seen: Mapping[str, datetime] = {}
        try:
            tags = await self.source.list_tags(name, secret)
            if self.first_seen is not None and target.min_age is not None:
                seen = self.first_seen.observe(name, tags)
            eligible = [tag for tag in tags if policy.matches(tag)]
            times: dict[str, datetime | None] = {}
            if needs_build_times(order) or target.min_age is not None:
                listed_current = current if current is not None and current in tags else None
                times = await self._build_times(name, eligible, listed_current, secret)
                if (
                    needs_build_times(order)
                    and written_tag is not None
                    and target.written != target.version  # only then can it be a step back
                    and written_tag in tags
                    and written_tag not in times
                ):  # "is what values hold older than what we wrote?"
                    times.update(await _build_times(self.source, name, [written_tag], secret, 1))
        except RegistryError as error:
            return ImageScan(target, error=str(error), error_key=error.identity)
        candidates = [TagCandidate(tag, times.get(tag), seen.get(tag)) for tag in eligible]
        ranked = rank_tags(candidates, order)
        newest = ranked[0] if ranked else None
        if not target.image.automatable:
            return ImageScan(target, newest)
        step_back = _step_back(target, order, times)
        now = self._clock()
        decision = select_update(
            current_tag=current,
            candidates=candidates,
            policy=policy,
            order=order,
            current_created=times.get(current) if current is not None else None,
            min_age=target.min_age,
            now=now,
        )
        if step_back is not None or not target.pin_digest:
            return ImageScan(target, newest, decision, step_back=step_back)
        pinned = decision.new_tag or current
        if pinned is None or pinned not in tags:
            return ImageScan(target, newest, decision)
        if pinned == current and target.min_age is not None:
            candidate = TagCandidate(pinned, times.get(pinned), seen.get(pinned))
            if not candidate.soaked(target.min_age, now):
                return ImageScan(target, newest, decision)  # pushed again; the new content soaks too
        try:
            digest = await self.source.tag_digest(name, pinned, secret)
        except RegistryNotFound:
            return ImageScan(target, newest, decision)  # deleted since the listing: next cycle decides
        except RegistryError as error:
            return ImageScan(target, error=str(error), error_key=error.identity)
        return ImageScan(target, newest, decision, digest=digest)

    async def _build_times(
        self,
        name: CanonicalName,
        eligible: Sequence[str],
        current: str | None,
        secret: BasicCredentials | None,
    ) -> dict[str, datetime | None]:
        """Build times of ``eligible`` and ``current``: looked up per the plan, the rest from the cache."""
        known = self.source.known_builds(name) if self.recheck is not None else {}
        needed = [*eligible, *([current] if current is not None and current not in eligible else [])]
        rolling = self.recheck.rolling(sum(tag in known for tag in needed)) if self.recheck else 0
        plan = plan_lookups(eligible=eligible, current=current, known=known, rolling=rolling)
        if self.recheck is None:
            lookups: Sequence[str] = needed
        else:
            lookups = plan.tags
        times = {tag: known[tag].created for tag in needed if tag in known}
        if len(plan.new) > self.lookup_width:
            async with self._bulk_place(name):
                fresh = await _build_times(self.source, name, lookups, secret, self.lookup_width)
        else:
            fresh = await _build_times(self.source, name, lookups, secret, self.lookup_width)
        times.update(fresh)
        while (best := unconfirmed_best(eligible, times, fresh)) is not None:
            confirmed = await _build_times(self.source, name, [best], secret, 1)
            fresh.update(confirmed)
            times.update(confirmed)
        return times

    @contextlib.asynccontextmanager
    async def _bulk_place(self, name: CanonicalName) -> AsyncIterator[None]:
        """Hold (with the other images of ``name``) one of its host's places for reading many tags."""
        admission = self._admissions.get(name)
        if admission is None:
            places = self._places.setdefault(name.host, asyncio.Semaphore(BULK_REPOSITORIES_PER_HOST))
            admission = self._admissions[name] = _Admission(places, asyncio.ensure_future(places.acquire()))
        admission.users += 1
        try:
            await asyncio.shield(admission.granted)
            yield
        finally:
            admission.users -= 1
            if admission.users == 0:
                del self._admissions[name]
                if admission.granted.done() and not admission.granted.cancelled():
                    admission.places.release()
                else:
                    admission.granted.cancel()


@dataclass
class _Admission:
    """A repository's claim on a host place: granted once, released when its last image is done."""

    places: asyncio.Semaphore
    granted: asyncio.Future[bool]
    users: int = 0


class ScanProgress:
    """Counts images decided (or failed) in a cycle: a metric as each one is, a log line every ``every``."""

    def __init__(
        self,
        metrics: AutomationMetrics,
        every: int = DEFAULT_PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every < 1:
            raise ValueError("progress must be reported every 1 image or more")
        self.metrics = metrics
        self.every = every
        self._clock = clock
        self._started = clock()
        self.decided = 0
        self.failed = 0
        metrics.cycle_images.set(0)

    def __call__(self, scan: ImageScan) -> None:
        if scan.error is None:
            self.decided += 1
        else:
            self.failed += 1
        self.metrics.scanned(failed=scan.error is not None)
        done = self.decided + self.failed
        self.metrics.cycle_images.set(done)
        if done % self.every == 0:
            _log.info(
                "scan progress: %d images scanned (%d failed), %.1fs into the cycle",
                done,
                self.failed,
                self._clock() - self._started,
            )


def _step_back(target: ImageTarget, order: TagOrder, times: Mapping[str, datetime | None]) -> StepBack | None:
    """Whether values were set back behind what the sidecar wrote (see ``StepBack``)."""
    current, written = target.version, target.written
    if current is None or written is None or current == written:
        return None
    current_tag, _, current_digest = current.partition("@")
    written_tag, _, written_digest = written.partition("@")
    if current_tag == written_tag:
        # Same tag, other content: only a pinned digest that someone else changed.
        if target.pin_digest and current_digest and written_digest and current_digest != written_digest:
            return StepBack(current, written)
        return None
    back = is_step_back(
        order,
        TagCandidate(current_tag, times.get(current_tag)),
        TagCandidate(written_tag, times.get(written_tag)),
    )
    return StepBack(current, written) if back else None
