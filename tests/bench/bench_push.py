"""Push to update: a tag pushed to the real registry → the HelmRelease's ``.spec.values`` updated, in seconds.

Starts its own control plane and a Distribution registry whose ``notifications.endpoints`` point at the
sidecar's ``/hooks/distribution``; one HelmRelease follows ``semver:>=1.0.0``, so every push qualifies. Each
of ``PUSHES`` pushes is timed from the end of the push (the registry answered the manifest PUT) to the moment
the API server holds the new tag (read every ``PROBE`` seconds). The baseline, measured in the same run, is the
same with the webhooks off and a sidecar polling every ``POLL_INTERVAL`` seconds, each push at a random moment
of the interval (as pushes arrive in life). The push target: p50 and p95 under 2 s.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from helmrelease.api.constants import GROUP, PLURAL, VERSION
from tests.support import controlplane, registry
from tests.support import sidecar as sidecar_mod
from tests.support.kubectl import kubectl
from tests.support.procs import REPO_ROOT, free_port
from tests.support.registry import ImagePusher, Notify, utc

PUSHES = 20
POLL_INTERVAL = 4.0
PROBE = 0.02
TARGET_SECONDS = 2.0
MOVE_TIMEOUT = 60.0
NAMESPACE = "bench-push"


@dataclass(frozen=True)
class Latencies:
    mode: str
    interval: str
    seconds: tuple[float, ...]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        return self.quantile(0.95)


def _helmrelease(name: str, image: str) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HelmRelease",
        "metadata": {
            "name": name,
            "annotations": {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:>=1.0.0"},
        },
        "spec": {
            "chart": {"repository": "http://charts.example.invalid/", "name": "app", "version": "0.1.0"},
            "values": {"image": f"{image}:1.0.0"},
        },
    }


def _measure(
    custom: k8s.CustomObjectsApi,
    pusher: ImagePusher,
    repository: str,
    name: str,
    before_push: Callable[[], None],
) -> tuple[float, ...]:
    image = f"{pusher.registry.host}/{repository}"
    seconds = []
    for patch in range(1, PUSHES + 1):
        before_push()
        tag = f"1.0.{patch}"
        pusher.push(repository, tag, created=utc(0))
        pushed = time.monotonic()
        wanted = {"image": f"{image}:{tag}"}
        while (
            custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)["spec"]["values"]
            != wanted
        ):
            if time.monotonic() - pushed > MOVE_TIMEOUT:
                raise RuntimeError(f"{name} did not move to {tag} within {MOVE_TIMEOUT:g}s")
            time.sleep(PROBE)
        seconds.append(time.monotonic() - pushed)
    return tuple(seconds)


def _print(rows: list[Latencies]) -> None:
    print(f"\n{'mode':<22} {'sidecar interval':>16} {'pushes':>6} {'p50':>8} {'p95':>8} {'max':>8}")
    for row in rows:
        print(
            f"{row.mode:<22} {row.interval:>16} {len(row.seconds):>6} {row.p50:>7.2f}s {row.p95:>7.2f}s "
            f"{max(row.seconds):>7.2f}s"
        )
    push, poll = rows
    print(
        f"\npush p50 is {poll.p50 / push.p50:.1f}x faster than polling every {POLL_INTERVAL:g}s "
        f"(p95 {poll.p95 / push.p95:.1f}x); target p50 and p95 < {TARGET_SECONDS:g}s: "
        + ("met" if push.p95 < TARGET_SECONDS and push.p50 < TARGET_SECONDS else "NOT met"),
        flush=True,
    )


def main() -> None:
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="bench-push-") as scratch:
        workdir = Path(scratch)
        plane = controlplane.start(workdir / "controlplane")
        webhook_port = free_port()
        reg = registry.start(
            workdir / "registry",
            notify=[Notify(f"http://127.0.0.1:{webhook_port}/hooks/distribution", f"Bearer {token}")],
        )
        started: list[sidecar_mod.Sidecar] = []
        try:
            kubectl(
                plane.kubeconfig, "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "helmrelease.yaml")
            )
            kubectl(
                plane.kubeconfig, "wait", "--for=condition=Established", "crd/helmreleases.helm.fluxcd.io"
            )
            api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
            core.create_namespaced_service_account(
                NAMESPACE, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
            )
            pusher = ImagePusher(reg)
            for repository in ("team/pushed", "team/polled"):
                pusher.push(repository, "1.0.0", created=utc(60))
                name = repository.rpartition("/")[2]
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, _helmrelease(name, f"{reg.host}/{repository}")
                )

            print(f"push: {PUSHES} pushes, webhooks on, polling once an hour", flush=True)
            hooked = sidecar_mod.start(
                workdir / "push",
                plane.kubeconfig,
                NAMESPACE,
                [reg.host],
                token=token,
                webhook_port=webhook_port,
            )
            started.append(hooked)
            push = _measure(custom, pusher, "team/pushed", "pushed", lambda: None)
            hooked.stop()  # the registry's later notifications go nowhere: only the poll can move "polled"

            print(f"poll: {PUSHES} pushes, webhooks off, polling every {POLL_INTERVAL:g}s", flush=True)
            polling = sidecar_mod.start(
                workdir / "poll", plane.kubeconfig, NAMESPACE, [reg.host], token=None, interval=POLL_INTERVAL
            )
            started.append(polling)
            rng = random.Random(12)
            poll = _measure(
                custom, pusher, "team/polled", "polled", lambda: time.sleep(rng.uniform(0, POLL_INTERVAL))
            )
            api.close()
            _print(
                [
                    Latencies("push (webhook)", "3600s", push),
                    Latencies("poll only", f"{POLL_INTERVAL:g}s", poll),
                ]
            )
        finally:
            for sidecar in started:
                sidecar.stop()
            reg.stop()
            plane.stop()


if __name__ == "__main__":
    main()
