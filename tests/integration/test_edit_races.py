"""Races between a user's edit of a HelmRelease and the image-policy sidecar's update of the same object.

The sidecar reads the release, asks the registry, then patches the tag with a JSON patch that tests the value and the
resourceVersion it read. First 100 races made certain: the user's edit lands between the
sidecar's read and its write (a kube client that runs the edit right before the patch goes out), over every kind of
edit (elsewhere in the values, the same tag newer or older, a lock, a new policy, ``suspend``). Then 100 loose
rounds: users editing from threads at random moments while a cycle runs. No user edit may be lost, and no tag
decided from the object as it was before the edit may be written.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.integration.test_image_policy import (
    AUTOMATED,
    Releases,
    app,
    one_cycle,
    releases,
)
from tests.support.registry import Registry

from helmrelease.adapters.kube import KubeClient

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["app", "releases"]  # fixtures shared with test_image_policy

POLICY = {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}
#: A tag newer than any in the registry: once a user pins it, the policy never moves it (no step back).
PINNED = "1.0.9"


@dataclass(frozen=True)
class Edit:
    """A user's edit, as a merge patch, and what the release must hold after the cycle."""

    patch: dict[str, Any]
    tag: str
    replicas: int = 1
    annotations: dict[str, str] | None = None


EDITS = {
    "elsewhere-in-values": Edit({"spec": {"values": {"replicas": 7}}}, "1.0.5", replicas=7),
    "same-tag-pinned-newer": Edit({"spec": {"values": {"image": {"tag": PINNED}}}}, PINNED),
    "same-tag-set-older": Edit({"spec": {"values": {"image": {"tag": "1.0.2"}}}}, "1.0.5"),
    "tag-and-elsewhere": Edit(
        {"spec": {"values": {"replicas": 5, "image": {"tag": PINNED}}}}, PINNED, replicas=5
    ),
    "locks": Edit(
        {"metadata": {"annotations": {"fluxcd.io/locked": "true"}}},
        "1.0.0",
        annotations={"fluxcd.io/locked": "true"},
    ),
    "new-policy": Edit(
        {"metadata": {"annotations": {"fluxcd.io/tag.chart-image": "semver:~1.1"}}},
        "1.1.0",
        annotations={"fluxcd.io/tag.chart-image": "semver:~1.1"},
    ),
    "stops-automation": Edit(
        {"metadata": {"annotations": {"fluxcd.io/automated": "false"}}},
        "1.0.0",
        annotations={"fluxcd.io/automated": "false"},
    ),
    "suspends": Edit({"spec": {"suspend": True}}, "1.0.0"),
}


class EditsBeforeFirstPatch(KubeClient):
    """A kube client that runs each release's user edit right before the sidecar's first patch of it."""

    def __init__(self, api_client: k8s.ApiClient, edits: dict[str, Callable[[], None]]) -> None:
        super().__init__(api_client)
        self.edits = dict(edits)
        self.patches: Counter[str] = Counter()
        self.rereads: Counter[str] = Counter()

    async def json_patch_helmrelease(
        self, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None:
        edit = self.edits.pop(name, None)
        if edit is not None:
            await asyncio.to_thread(edit)
        self.patches[name] += 1
        await super().json_patch_helmrelease(namespace, name, operations)

    async def get_helmrelease(self, namespace: str, name: str) -> dict[str, Any]:
        self.rereads[name] += 1
        return await super().get_helmrelease(namespace, name)


def create(releases: Releases, name: str, app: str) -> None:
    releases.create(name, {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1}, dict(POLICY))


async def test_100_edits_landing_between_the_sidecars_read_and_write(
    app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    kinds = list(EDITS)
    rounds = {f"race-{index:03d}": kinds[index % len(kinds)] for index in range(100)}
    for name in rounds:
        create(releases, name, app)

    def user(name: str, kind: str) -> Callable[[], None]:
        return lambda: releases.patch(name, EDITS[kind].patch)

    kube = EditsBeforeFirstPatch(api_client, {name: user(name, kind) for name, kind in rounds.items()})
    await one_cycle(api_client, namespace, registry.host, kube=kube)

    assert not kube.edits, f"releases the sidecar never patched: {sorted(kube.edits)}"
    lost: list[str] = []
    stale: list[str] = []
    unraced: list[str] = []
    for name, kind in rounds.items():
        edit = EDITS[kind]
        hr = releases.get(name)
        values = hr["spec"]["values"]
        annotations = hr["metadata"]["annotations"]
        kept = values.get("replicas") == edit.replicas and (
            edit.annotations is None or edit.annotations.items() <= annotations.items()
        )
        if kind == "suspends":
            kept = kept and hr["spec"].get("suspend") is True
        if not kept:
            lost.append(f"{name} ({kind}): {hr['spec']} {annotations}")
        if values["image"]["tag"] != edit.tag:
            stale.append(f"{name} ({kind}): tag {values['image']['tag']}, expected {edit.tag}")
        if kube.rereads[name] != 1:  # every patch is refused once: each race was real
            unraced.append(f"{name} ({kind}): re-read {kube.rereads[name]} times")
    print(f"\ncertain races: {len(rounds)} rounds, lost edits {len(lost)}, stale writes {len(stale)}")
    assert (lost, stale, unraced) == ([], [], [])


def edit_as_a_user(
    releases: Releases,
    last: dict[str, int],
    errors: list[BaseException],
    name: str,
    delays: list[float],
    pin_at: int,
) -> None:
    """Edit replicas once per delay (recording the last value written) and pin the tag at step ``pin_at``."""
    try:
        for step, delay in enumerate(delays):
            time.sleep(delay)
            if step == pin_at:
                releases.patch(name, {"spec": {"values": {"image": {"tag": PINNED}}}})
            replicas = 2 + step
            releases.patch(name, {"spec": {"values": {"replicas": replicas}}})
            last[name] = replicas
    except Exception as error:  # re-raised in the test's thread
        errors.append(error)


async def test_100_loose_rounds_of_users_editing_while_the_sidecar_cycles(
    app: str, registry: Registry, releases: Releases, api_client: k8s.ApiClient, namespace: str
) -> None:
    """Each round: a user thread edits replicas a few times and pins the tag once, at random moments, while a
    cycle runs. After it, replicas are the user's last and the tag is the pin (a newer tag the policy never
    moves away from): anything else is a lost edit or a tag written from a stale read."""
    rng = random.Random(20261202)
    lost: list[str] = []
    stale: list[str] = []
    contended = 0
    batch = 20
    for start in range(0, 100, batch):
        names = [f"loose-{index:03d}" for index in range(start, start + batch)]
        for name in names:
            create(releases, name, app)
        last: dict[str, int] = {}
        errors: list[BaseException] = []

        threads = [
            threading.Thread(
                target=edit_as_a_user,
                args=(
                    releases,
                    last,
                    errors,
                    name,
                    [rng.uniform(0, 0.15) for _ in range(4)],
                    rng.randrange(4),
                ),
                daemon=True,
            )
            for name in names
        ]
        kube = EditsBeforeFirstPatch(api_client, {})
        for thread in threads:
            thread.start()
        await one_cycle(api_client, namespace, registry.host, kube=kube)
        for thread in threads:
            await asyncio.to_thread(thread.join, 60)
        assert errors == []
        assert not any(thread.is_alive() for thread in threads)
        contended += sum(1 for name in names if kube.rereads[name])
        for name in names:
            values = releases.values(name)
            if values.get("replicas") != last[name]:
                lost.append(f"{name}: replicas {values.get('replicas')}, the user's last {last[name]}")
            if values["image"]["tag"] != PINNED:
                stale.append(f"{name}: tag {values['image']['tag']} over the user's pin {PINNED}")
    print(
        f"\nloose races: 100 rounds, {contended} with a refused patch, lost edits {len(lost)}, stale {len(stale)}"
    )
    assert (lost, stale) == ([], [])
