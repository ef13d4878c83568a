"""Push, not only poll: the real registry notifies the real sidecar, and the HelmRelease moves at once.

Each test starts its own Distribution registry whose ``notifications.endpoints`` point at the sidecar's
``/hooks/distribution``, so what arrives is what a self-hosted registry really sends. The sidecar polls once an
hour: after its first poll, only a push can move anything within a test. A test's first tag is pushed before
the registry notifies anyone (the registry then restarts over the same storage and port with notifications
on): a registry delivers each endpoint's events in order and retries a refused one forever, so an early
notification would otherwise be delivered late, into the middle of the test.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from tests.integration.test_image_policy import AUTOMATED, Releases, app, releases
from tests.support import registry as registry_mod
from tests.support import sidecar as sidecar_mod
from tests.support.procs import free_port
from tests.support.registry import ImagePusher, Notify, Registry, utc
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["app", "releases"]  # fixtures shared with test_image_policy

SEMVER = {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}
TOKEN = "webhook-" + uuid.uuid4().hex
MOVE_TIMEOUT = 20


class Stack:
    """A notifying registry and the sidecar it notifies, for one test."""

    def __init__(self, workdir: Path, kubeconfig: Path, namespace: str, shared: Registry) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.shared = shared
        self.webhook_port = free_port()
        self.port = free_port()
        self.registry: Registry | None = None
        self.sidecar: sidecar_mod.Sidecar | None = None

    def seed(self, repository: str, tag: str) -> str:
        """Push ``repository:tag`` with notifications off; returns the image's name."""
        quiet = registry_mod.start(self.workdir / "registry", port=self.port)
        try:
            ImagePusher(quiet).push(repository, tag, created=utc(10))
        finally:
            quiet.stop()
        return f"{quiet.host}/{repository}"

    def start_registry(self, authorization: str) -> ImagePusher:
        """The registry, notifying the sidecar with ``authorization``; a pusher to it."""
        if self.registry is not None:
            self.registry.stop()
        url = f"http://127.0.0.1:{self.webhook_port}/hooks/distribution"
        self.registry = registry_mod.start(
            self.workdir / "registry", notify=[Notify(url, authorization)], port=self.port
        )
        return ImagePusher(self.registry)

    def start_sidecar(self, settle: float = 0.2) -> sidecar_mod.Sidecar:
        assert self.registry is not None
        self.sidecar = sidecar_mod.start(
            self.workdir / "sidecar",
            self.kubeconfig,
            self.namespace,
            [self.registry.host, self.shared.host],
            token=TOKEN,
            settle=settle,
            webhook_port=self.webhook_port,
        )
        return self.sidecar

    def stop(self) -> None:
        if self.sidecar is not None:
            self.sidecar.stop()
        if self.registry is not None:
            self.registry.stop()


@pytest.fixture
def stack(tmp_path: Path, kubeconfig: Path, namespace: str, registry: Registry) -> Iterator[Stack]:
    started = Stack(tmp_path, kubeconfig, namespace, registry)
    yield started
    started.stop()


def waiting_for(stack: Stack) -> Callable[[], str]:
    return lambda: stack.sidecar.tail() if stack.sidecar is not None else ""


def test_a_push_moves_every_release_using_the_repository_at_once_and_nothing_else(
    stack: Stack, releases: Releases, app: str
) -> None:
    web = stack.seed("team/web", "1.0.0")
    pusher = stack.start_registry(f"Bearer {TOKEN}")
    releases.create("web", {"image": f"{web}:1.0.0"}, SEMVER)
    releases.create("web-too", {"image": {"repository": web, "tag": "1.0.0"}}, SEMVER)
    # In the shared registry, which sends no notifications: 1.0.5 qualifies, and only a poll would move it.
    releases.create("other", {"image": f"{app}:1.0.0"}, SEMVER)
    sidecar = stack.start_sidecar()
    eventually(
        lambda: releases.values("other") == {"image": f"{app}:1.0.5"}, 30, "the first poll to move other"
    )
    releases.patch(
        "other", {"spec": {"values": {"image": f"{app}:1.0.0"}}}
    )  # back: the next move is a poll's
    polls = sidecar.cycles()

    pusher.push("team/web", "1.0.1", created=utc(1))

    eventually(
        lambda: (
            releases.values("web") == {"image": f"{web}:1.0.1"}
            and releases.values("web-too") == {"image": {"repository": web, "tag": "1.0.1"}}
        ),
        MOVE_TIMEOUT,
        "both releases using team/web to move to 1.0.1",
        context=waiting_for(stack),
    )
    assert sidecar.cycles() == polls  # no poll ran: the push did it
    assert releases.values("other") == {"image": f"{app}:1.0.0"}  # not pushed, not rescanned
    assert sidecar.requests_counted("distribution", "accepted") >= 1
    assert f"webhook distribution: pushed {web}:1.0.1; rescanning the releases that use it" in sidecar.log()
    assert (
        "Normal",
        "ImageUpdated",
        f"{web} 1.0.0 → 1.0.1 (semver:~1.0)",
    ) in releases.events("web")


def test_a_bad_token_is_refused_and_nothing_moves_until_a_good_push(stack: Stack, releases: Releases) -> None:
    web = stack.seed("team/web", "1.0.0")
    pusher = stack.start_registry("Bearer not-the-token")
    releases.create("web", {"image": f"{web}:1.0.0"}, SEMVER)
    sidecar = stack.start_sidecar()

    pusher.push("team/web", "1.0.1", created=utc(5))

    eventually(
        lambda: sidecar.requests_counted("distribution", "unauthorized") >= 1,
        MOVE_TIMEOUT,
        "the registry's notification of 1.0.1 to be refused",
        context=waiting_for(stack),
    )
    assert "webhook distribution: refused a request from 127.0.0.1 (401 unauthorized)" in sidecar.log()
    assert sidecar.rescans() == 0
    assert sidecar.requests_counted("distribution", "accepted") == 0
    # The refused request was the push of 1.0.1 itself (the registry sends one event per tag, its manifest's:
    # tests.support.registry.Notify), so that push had its chance, and nothing moved.
    assert releases.values("web") == {"image": f"{web}:1.0.0"}

    # The same registry (storage, name) with the right token: its next push is heard, and moves the release.
    stack.start_registry(f"Bearer {TOKEN}").push("team/web", "1.0.2", created=utc(1))
    eventually(
        lambda: releases.values("web") == {"image": f"{web}:1.0.2"},
        MOVE_TIMEOUT,
        "the good push to move web",
        context=waiting_for(stack),
    )
    assert sidecar.cycles() == 1  # the only poll was the first, before any push


def test_a_burst_of_pushes_is_coalesced_into_one_rescan(stack: Stack, releases: Releases) -> None:
    web = stack.seed("team/web", "1.0.0")
    pusher = stack.start_registry(f"Bearer {TOKEN}")
    releases.create("web", {"image": f"{web}:1.0.0"}, SEMVER)
    sidecar = stack.start_sidecar(settle=5)  # a burst within 5 s of its first push is one rescan

    for patch in range(1, 6):
        pusher.push("team/web", f"1.0.{patch}", created=utc(5 - patch / 10))

    eventually(
        lambda: releases.values("web") == {"image": f"{web}:1.0.5"},
        MOVE_TIMEOUT,
        "web to move to the last tag of the burst",
        context=waiting_for(stack),
    )
    assert sidecar.requests_counted("distribution", "accepted") == 5
    assert sidecar.metric("helmrelease_webhook_pushed_images_total", receiver="distribution") == 5
    assert sidecar.rescans() == 1
    assert [event[2] for event in releases.events("web", "ImageUpdated")] == [
        f"{web} 1.0.0 → 1.0.5 (semver:~1.0)"
    ]


def test_hostile_requests_are_refused_cheaply_and_a_push_still_moves_at_once(
    stack: Stack, releases: Releases
) -> None:
    web = stack.seed("team/web", "1.0.0")
    pusher = stack.start_registry(f"Bearer {TOKEN}")
    releases.create("web", {"image": f"{web}:1.0.0"}, SEMVER)
    sidecar = stack.start_sidecar()
    url = sidecar.hook_url("distribution")
    # Bodies that trickle in (each holds a reading slot until its 10 s are up) ...
    trickling = []
    for _ in range(8):
        connection = socket.create_connection(("127.0.0.1", sidecar.webhook_port))
        connection.sendall(
            f"POST /hooks/distribution HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        trickling.append(connection)
    try:
        # ... a flood of wrong tokens, one body far over the limit and one that is not JSON ...
        with requests.Session() as session:
            for _ in range(200):
                assert (
                    session.post(
                        url, data=b"{}", headers={"Authorization": "Bearer guess"}, timeout=5
                    ).status_code
                    == 401
                )
            big = session.post(
                url, data=b" " * (2 * 1024 * 1024), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            assert big.status_code == 413
            garbled = session.post(
                url, data=b"\x00garbage", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
            )
            assert garbled.status_code == 400

        # ... and a real push still moves the release at once.
        pusher.push("team/web", "1.0.1", created=utc(1))
        eventually(
            lambda: releases.values("web") == {"image": f"{web}:1.0.1"},
            MOVE_TIMEOUT,
            "the push to move web while hostile requests are around",
            context=waiting_for(stack),
        )
    finally:
        for connection in trickling:
            connection.close()
    assert sidecar.requests_counted("distribution", "unauthorized") == 200
    assert sidecar.requests_counted("distribution", "too_large") == 1
    assert sidecar.requests_counted("distribution", "malformed") == 1
    assert sidecar.cycles() == 1
    refusals = sidecar.log().count("refused a request from 127.0.0.1 (401 unauthorized)")
    assert 1 <= refusals < 10  # one line per 10 s, with the count left out, not one per request
