"""Asking registries which tags an image could move to, at the least cost a scan cycle allows.

Costs: a repository's tags are listed once per cycle and credentials (``ScanCycle``), however many releases
use it; build times are looked up only for ``created`` ordering, only for tags the policy admits (and the
current one), and the registry clients keep manifests and config blobs cached by digest across cycles, so
an unchanged tag costs one HEAD the next time. A client per distinct credentials keeps one release's
secret from ever being sent on behalf of another, and keeps a 401 for one from being remembered for all.

Beyond choosing a tag, a scan reads what the newer features need: build times also for soak time
(``min-age``), the digest of the tag to write for a pinned image (one HEAD: a tag pushed again with other
content is a move of its own), and whether values were set back behind what the sidecar last wrote there
(a ``StepBack``, which pauses the image instead of moving it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
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
from helmrelease.automation.soak import FirstSeen
from helmrelease.automation.watched import ImageTarget, TagMove, tag_move
from helmrelease.images.policy import TagOrder
from helmrelease.images.reference import CanonicalName
from helmrelease.images.select import TagCandidate, UpdateDecision, is_step_back, rank_tags, select_update


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
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._session_factory = session_factory
        self._clients: dict[BasicCredentials | None, RegistryClient] = {}

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

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class PoolCycle:
    """One cycle's ``ScanCycle`` per set of credentials, over the pool's long-lived clients."""

    def __init__(self, pool: RegistryPool) -> None:
        self._pool = pool
        self._scans: dict[BasicCredentials | None, ScanCycle] = {}

    def _scan(self, credentials: BasicCredentials | None) -> ScanCycle:
        scan = self._scans.get(credentials)
        if scan is None:
            scan = self._scans[credentials] = ScanCycle(self._pool.client_for(credentials))
        return scan

    async def list_tags(self, name: CanonicalName, credentials: BasicCredentials | None) -> tuple[str, ...]:
        return await self._scan(credentials).list_tags(name)

    async def image_created(
        self, name: CanonicalName, tag: str, credentials: BasicCredentials | None
    ) -> datetime | None:
        return await self._scan(credentials).image_created(name, tag)

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


class ImageScanner:
    """Scans images against a ``TagSource``; knows which registry calls each tag order needs.

    ``lookup_width`` bounds the build-time lookups in flight per image; the registry client's own per-host
    limits decide how many requests actually go out.
    """

    def __init__(
        self,
        source: TagSource,
        *,
        lookup_width: int = DEFAULT_LOOKUP_WIDTH,
        first_seen: FirstSeen | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if lookup_width < 1:
            raise ValueError("lookup_width must be at least 1")
        self.source = source
        self.lookup_width = lookup_width
        self.first_seen = first_seen
        self._clock = clock or (lambda: datetime.now(UTC))

    async def scan(self, target: ImageTarget, credentials: CredentialProvider) -> ImageScan:
        """The registry's view of ``target``; registry failures come back as ``error``, not raised."""
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
                lookups = list(eligible)
                for extra in (current, written_tag if needs_build_times(order) else None):
                    # "is the best one newer than what runs now (or than what we wrote)?"
                    if extra is not None and extra in tags and extra not in lookups:
                        lookups.append(extra)
                times = await _build_times(self.source, name, lookups, secret, self.lookup_width)
        except RegistryError as error:
            return ImageScan(target, error=str(error))
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
            return ImageScan(target, error=str(error))
        return ImageScan(target, newest, decision, digest=digest)


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
