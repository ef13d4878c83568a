"""A replica's claim on a release while its pass runs Helm on it: a Lease, so that peers never run Helm at once.

kopf's peering pauses a replica's watches when one of higher priority joins, but not the handler it is running: the
paused replica's `helm upgrade` goes on while the newcomer reconciles the same release. Without a claim the newcomer
sees the release `pending-upgrade`, takes it for a stale lock and rolls it back under the running upgrade. So, with
peering, a pass takes the Lease (`plan.claim_lease_name`, in the release's namespace) of the release an action runs
on (`plan.claimed_release`: the old one for a rename's `uninstall-previous`) before the action, renews it every
third of `plan.CLAIM_DURATION` while it runs and deletes it when the pass ends; a replica that finds it held and
renewed by another waits (`OperationInProgress`: a Normal Event once per wait, and no status write, which is the
holder's). A replica killed mid-operation stops renewing:
its claim expires before kopf lets its standby resume (the peering lifetime is longer), which then recovers the
release as before (`StaleLock`). What to do with a claim is decided by `plan.claim_step`, a pure function.

A claim whose renewal fails for longer than two thirds of its duration (the API server unreachable), or that is
found taken, is lost: the pass's running Helm operation is cancelled (`lost`), since another replica may take the
claim once it expires. Standalone (no peering) nothing of this runs: one replica's own lock per release suffices.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from helmrelease.adapters.kube import ApiUnavailable, Conflict, KubeError, NotFound, StoredLease
from helmrelease.reconcile.apis import KubeApi
from helmrelease.reconcile.plan import CLAIM_DURATION, Claim, ClaimStep, claim_lease_name, claim_step

log = logging.getLogger(__name__)

#: A claim not renewed for this share of its duration is given up (its holder cancels its Helm operation).
RENEW_DEADLINE: Final = 2 / 3


@dataclass
class HeldClaim:
    """A claim this replica holds, renewed in the background until released."""

    namespace: str
    name: str
    lease: StoredLease
    #: time.monotonic() of the last successful write.
    renewed: float = field(default_factory=time.monotonic)
    #: Why the claim was lost (found taken, or not renewed in time); None while it holds.
    lost: str | None = None
    task: asyncio.Task[None] | None = None


class ReleaseClaims:
    """Takes, renews and releases this replica's claims on releases, as `identity`."""

    def __init__(
        self,
        kube: KubeApi,
        identity: str,
        *,
        duration: float = CLAIM_DURATION,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kube = kube
        self.identity = identity
        self.duration = duration
        self.clock = clock

    async def take(self, namespace: str, release: str) -> HeldClaim | Claim:
        """The claim on `namespace/release`, taken (a `HeldClaim`, renewed until `release`), or the live claim of
        another replica (a `Claim`) to wait for. Raises `KubeError` when the API does not answer."""
        name = claim_lease_name(release)
        for _ in range(3):
            found = await self.kube.read_lease(namespace, name)
            claim = (
                None
                if found is None
                else Claim(found.holder, found.renewed, found.duration, (namespace, release))
            )
            step = claim_step(claim, self.identity, self.clock())
            if step is ClaimStep.WAIT:
                assert claim is not None  # claim_step waits only for an existing claim
                return claim
            try:
                lease = await self.kube.write_lease(
                    namespace,
                    name,
                    self.identity,
                    self.duration,
                    replacing=None if found is None else found.resource_version,
                )
            except Conflict:
                continue  # another replica wrote it first: look again
            if claim is not None and step is ClaimStep.TAKE and claim.holder:
                log.info(
                    "took the claim on release %s/%s from %s, which stopped renewing it",
                    namespace,
                    release,
                    claim.holder,
                )
            held = HeldClaim(namespace, release, lease)
            held.task = asyncio.create_task(self._renew(held), name=f"claim {namespace}/{release}")
            return held
        raise KubeError(f"Lease {namespace}/{name}: changed on every attempt to take it")

    async def release(self, held: HeldClaim) -> None:
        """Stop renewing the claim and delete its Lease (only the version we wrote: one taken since stays)."""
        if held.task is not None:
            held.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held.task
        if held.lost is not None:
            return
        try:
            await self.kube.delete_lease(
                held.namespace, claim_lease_name(held.name), held.lease.resource_version
            )
        except KubeError as error:
            # It expires by itself; a peer waits at most its duration for it.
            log.warning("could not release the claim on %s/%s: %s", held.namespace, held.name, error)

    async def _renew(self, held: HeldClaim) -> None:
        interval = self.duration / 3
        name = claim_lease_name(held.name)
        while held.lost is None:
            await asyncio.sleep(interval)
            try:
                held.lease = await self.kube.write_lease(
                    held.namespace, name, self.identity, self.duration, replacing=held.lease.resource_version
                )
                held.renewed = time.monotonic()
            except (Conflict, NotFound):
                held.lost = "another replica took it"
            except (ApiUnavailable, KubeError) as error:
                if time.monotonic() - held.renewed > self.duration * RENEW_DEADLINE:
                    held.lost = f"it could not be renewed in time ({error})"
                else:
                    continue
            if held.lost is not None:
                log.error("lost the claim on release %s/%s: %s", held.namespace, held.name, held.lost)
