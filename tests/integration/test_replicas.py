"""Two operator replicas with kopf peering, and a HelmRelease deleted and recreated under a running install.

Every helm call goes through the recording wrapper (tests/support/helm_wrapper.py), so "never two helm operations
on one release at once" is checked on what helm actually ran, with start and end times, not inferred from logs.
Replicas are given distinct priorities, as docs/operating.md says they must be: kopf pauses a replica while a
peer of higher priority lives, and a SIGKILLed peer counts as alive until its keep-alive expires (kopf's peering
lifetime, 60s), after which the standby resumes.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tests.support.helm_wrapper import BEFORE, HelmWrapper, Invocation, overlaps
from tests.support.helmtool import Helm
from tests.support.nodesim import READY_AFTER
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    StartOperator,
    create_hr,
    events_for,
    find_hr,
    get_hr,
    helmrelease,
    ready,
)
from tests.support.wait import eventually

from helmrelease.reconcile.plan import claim_lease_name

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

PEERING = "ops"
#: kopf's default peering lifetime: a peer not heard of for this long is dead.
PEERING_LIFETIME = 60
RELEASES = 4
#: kopf's line (kopf._core.engines.peering) when a replica resumes after the peer it paused for is gone.
RESUMING = "Resuming operations after the pause"
#: kopf's line when a replica pauses because a peer of higher priority appeared.
PAUSING = "Pausing operations in favour of"


@pytest.fixture
def peering(peering_crds: None, custom: k8s.CustomObjectsApi, namespace: str) -> str:
    """The KopfPeering object the namespaced replicas share (kopf requires it when --peering is given)."""
    custom.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    return PEERING


def items(custom: k8s.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
        "items"
    ]
    return listed


def converged(custom: k8s.CustomObjectsApi, namespace: str, names: list[str], generation: int) -> bool:
    found = {item["metadata"]["name"]: item for item in items(custom, namespace)}
    return all(
        name in found and ready(found[name]) and found[name]["metadata"]["generation"] == generation
        for name in names
    )


def pid_of(operator: Operator) -> int:
    assert operator.process.popen is not None
    return operator.process.popen.pid


def mutating(invocations: list[Invocation], operator: Operator | None = None) -> list[Invocation]:
    return [
        invocation
        for invocation in invocations
        if invocation.mutating and (operator is None or invocation.ppid == pid_of(operator))
    ]


def running(invocations: list[Invocation]) -> bool:
    """One of them has its real helm spawned and not returned."""
    return any(
        invocation.helm_start is not None and invocation.helm_end is None for invocation in invocations
    )


def replica(start_operator: StartOperator, wrapper: HelmWrapper, priority: int, state: Path) -> Operator:
    """A replica with a state directory of its own, as each Pod has."""
    return start_operator(
        "--peering", PEERING, "--priority", str(priority), "--state-dir", str(state), helm=str(wrapper.path)
    )


def peers(custom: k8s.CustomObjectsApi, namespace: str) -> dict[str, int]:
    """The live peers' priorities by identity, as kopf keeps them in the KopfPeering's status."""
    body = custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", PEERING)
    return {identity: int(info["priority"]) for identity, info in (body.get("status") or {}).items() if info}


def patch_values(custom: k8s.CustomObjectsApi, namespace: str, name: str, values: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"values": values}}
    )


def slow(message: str, seconds: int) -> dict[str, Any]:
    """Values whose Deployment the node simulator reports ready only after `seconds`: helm --wait holds that long."""
    return {
        "message": message,
        "deploymentAnnotations": {"test.helmrelease.dev/ready-after-seconds": str(seconds)},
    }


def test_two_replicas_never_run_helm_on_one_release_at_once_and_the_standby_takes_over_a_sigkill(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    peering: str,
    chart_repo: Any,
    helm: Helm,
    tmp_path: Path,
) -> None:
    wrapper = HelmWrapper.create(tmp_path / "helm-wrapper")
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    names = [f"p{index}" for index in range(RELEASES)]
    active = replica(start_operator, wrapper, 2, tmp_path / "state-active")
    standby = replica(start_operator, wrapper, 1, tmp_path / "state-standby")
    # Both keep-alives are in: the standby (started paused, as kopf starts every peer) knows of the active one.
    eventually(
        lambda: sorted(peers(custom, namespace).values()) == [1, 2],
        60,
        "both replicas to announce themselves in the KopfPeering",
        context=standby.tail,
    )

    for name in names:
        create_hr(custom, namespace, helmrelease(name, chart, slow("one", 1), wait=True))
    eventually(
        lambda: converged(custom, namespace, names, 1), 180, "all releases installed", context=active.tail
    )
    for name in names:
        patch_values(custom, namespace, name, slow("two", 1))
    eventually(
        lambda: converged(custom, namespace, names, 2), 180, "all releases upgraded", context=active.tail
    )

    # The third change is slow on p0: the active replica is SIGKILLed while helm waits for it (release pending).
    release = f"{namespace}-p0"
    upgrades_before = len(wrapper.calls("upgrade", release=release))
    for name in names:
        patch_values(custom, namespace, name, slow("three", 30 if name == "p0" else 1))
    eventually(
        lambda: running(wrapper.calls("upgrade", release=release)[upgrades_before:]),
        120,
        "the active replica's third upgrade of p0 to be running",
        context=active.tail,
    )
    assert not mutating(wrapper.invocations(), standby), "the standby ran helm while the active replica lived"
    active.kill()
    killed_at = time.time()
    killed = time.monotonic()

    eventually(
        lambda: RESUMING in standby.log(),
        PEERING_LIFETIME + 60,
        "the standby to resume",
        context=standby.tail,
    )
    took_over = time.monotonic() - killed
    eventually(
        lambda: converged(custom, namespace, names, 3),
        240,
        "the standby to converge every release",
        context=standby.tail,
    )

    invocations = wrapper.invocations()
    found = overlaps(invocations, killed_at=killed_at)
    assert not found, "\n".join(f"{a.argv} ({a.ppid}) overlaps {b.argv} ({b.ppid})" for a, b in found)
    for invocation in mutating(invocations, standby):
        assert invocation.start > killed_at, f"the standby ran {invocation.argv} before the kill"
    for name in names:
        statuses = [
            entry["status"] for entry in helm.json("history", f"{namespace}-{name}", "--namespace", namespace)
        ]
        assert statuses[-1] == "deployed", (name, statuses)
        values = helm.json("get", "values", f"{namespace}-{name}", "--namespace", namespace)
        assert values["message"] == "three", (name, values)
    for item in items(custom, namespace):
        assert item["metadata"].get("finalizers"), item["metadata"]
    assert took_over <= PEERING_LIFETIME + 15, f"the standby took {took_over:.0f}s to resume"
    print(
        f"\nreplicas: {len(mutating(invocations))} mutating helm runs, 0 overlapping; the standby resumed "
        f"{took_over:.0f}s after the SIGKILL (peering lifetime {PEERING_LIFETIME}s)"
    )


def digests_deployed(core: k8s.CoreV1Api, namespace: str, release: str) -> list[str]:
    """The digest label of every stored revision of `release`, oldest first: what each deploy applied."""
    storage = core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    ordered = sorted(storage, key=lambda secret: int(secret.metadata.labels["version"]))
    return [secret.metadata.labels.get("helm.fluxcd.io/digest", "") for secret in ordered]


def decided_about(operator: Operator, namespace: str, name: str) -> bool:
    """The operator logged a decision about HelmRelease `namespace/name` (report.Decision.line)."""
    return f"HelmRelease {namespace}/{name}: " in operator.log()


@pytest.mark.parametrize("held", ["helm-running", "before-helm"])
def test_a_higher_priority_replica_joining_mid_upgrade_waits_for_it_instead_of_unlocking(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    peering: str,
    chart_repo: Any,
    helm: Helm,
    tmp_path: Path,
    held: str,
) -> None:
    """kopf pauses the lower replica's watches when a higher one joins, not its running pass: the newcomer must not
    take the release that pass is upgrading (`helm-running`: helm waits for a Deployment the test holds unready, the
    release is pending-upgrade; `before-helm`: the wrapper holds helm before it starts) for a stale lock."""
    wrapper = HelmWrapper.create(tmp_path / "helm-wrapper")
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    release = f"{namespace}-j0"
    first = replica(start_operator, wrapper, 1, tmp_path / "state-first")
    create_hr(custom, namespace, helmrelease("j0", chart, slow("one", 1), wait=True, timeout=600))
    eventually(lambda: converged(custom, namespace, ["j0"], 1), 120, "j0 installed", context=first.tail)

    upgrades_before = len(wrapper.calls("upgrade", release=release))
    gate = wrapper.arm(BEFORE, "upgrade", release=release) if held == "before-helm" else None
    # A spec change (two replicas); without the gate, one whose Deployment the node simulator reports ready only
    # after ten minutes, or when the test annotates it again: `helm upgrade --wait` runs (release pending-upgrade) as
    # long as the test holds it.
    held_seconds = 1 if gate is not None else 600
    patch_values(custom, namespace, "j0", {**slow("two", held_seconds), "replicas": 2})
    if gate is not None:
        gate.wait_held(context=first.tail)
    else:
        eventually(
            lambda: (
                running(wrapper.calls("upgrade", release=release)[upgrades_before:])
                and helm.json("list", "--namespace", namespace, "--pending")
            ),
            120,
            "the first replica's upgrade of j0 to be running, the release pending-upgrade",
            context=first.tail,
        )

    second = replica(start_operator, wrapper, 2, tmp_path / "state-second")
    eventually(lambda: PAUSING in first.log(), 60, "the first replica to pause", context=first.tail)
    # The newcomer had its chance: it decided about j0 (or ran helm on it) while the first one's upgrade was held.
    eventually(
        lambda: decided_about(second, namespace, "j0") or mutating(wrapper.invocations(), second),
        120,
        "the second replica to act on j0",
        context=second.tail,
    )
    first_upgrade = wrapper.calls("upgrade", release=release)[upgrades_before]
    assert first_upgrade.ppid == pid_of(first), "the first replica ran the upgrade"
    assert first_upgrade.helm_end is None, "the hold did not hold"
    patch_values(custom, namespace, "j0", slow("three", 1))
    eventually(
        lambda: get_hr(custom, namespace, "j0")["metadata"]["generation"] == 3, 30, "the third change stored"
    )

    # Let the first replica's upgrade finish: the gate opens, or the Deployment becomes ready.
    if gate is not None:
        gate.open()
    else:
        k8s.AppsV1Api(api_client).patch_namespaced_deployment(
            release, namespace, {"metadata": {"annotations": {READY_AFTER: "0"}}}
        )
    eventually(
        lambda: converged(custom, namespace, ["j0"], 3),
        240,
        "the second replica to converge j0 on the third change",
        context=second.tail,
    )

    history = helm.json("history", release, "--namespace", namespace)
    for who, operator in (("first", first), ("second", second)):
        print(f"\nthe {who} replica decided:")
        print(
            "\n".join(line for line in operator.log().splitlines() if f"HelmRelease {namespace}/j0: " in line)
        )
    print(f"join ({held}): history {[(e['revision'], e['status'], e.get('description')) for e in history]}")
    invocations = wrapper.invocations()
    found = overlaps(invocations)
    assert not found, "\n".join(f"{a.argv} ({a.ppid}) overlaps {b.argv} ({b.ppid})" for a, b in found)
    assert history[-1]["status"] == "deployed", history
    assert not [entry for entry in history if "ollback" in entry.get("description", "")], history
    values = helm.json("get", "values", release, "--namespace", namespace)
    assert values["message"] == "three", values
    digests = digests_deployed(core, namespace, release)
    assert len(digests) == len(set(digests)) == 3, f"a revision applied twice: {digests}"
    # The newcomer waited for the first replica's claim, however often it looked again: one Event says so.
    told = [event for event in events_for(core, namespace, "j0") if event[1] == "OperationInProgress"]
    assert [kind for kind, _, _ in told] == ["Normal"], told
    assert f"/{pid_of(first)}/" in told[0][2], "the Event names the holder"
    assert not re.search(r"Traceback", first.log() + second.log())


#: A replica identity as `cli.run.replica_identity` makes them: the peer the rename test plays.
TEST_PEER = "peer-pod/1/test"


def claim_held_by(coordination: k8s.CoordinationV1Api, namespace: str, release: str, holder: str) -> None:
    """The claim on `release` as a live peer holds it (renewed now, for long enough that it does not expire)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    coordination.create_namespaced_lease(
        namespace,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": claim_lease_name(release)},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 600,
                "acquireTime": now,
                "renewTime": now,
            },
        },
    )


def waits_decided(operator: Operator, namespace: str, name: str) -> int:
    """How often the operator decided to wait for a peer's claim on behalf of HelmRelease `namespace/name`."""
    return operator.log().count(f"HelmRelease {namespace}/{name}: wait-retry OperationInProgress decided")


def test_a_rename_waits_for_a_peer_holding_the_old_release_and_says_so_in_one_event(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    peering: str,
    chart_repo: Any,
    helm: Helm,
    tmp_path: Path,
) -> None:
    """The release a rename uninstalls first is the old one: a peer's claim on it (the test plays the peer: its
    Lease) must hold the rename back, whoever holds the new name. The waiting replica posts one Normal Event naming
    the holder however often it looks again, and leaves the status alone."""
    wrapper = HelmWrapper.create(tmp_path / "helm-wrapper")
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    operator = replica(start_operator, wrapper, 1, tmp_path / "state")
    create_hr(custom, namespace, helmrelease("r0", chart, {"message": "one"}))
    eventually(lambda: converged(custom, namespace, ["r0"], 1), 120, "r0 installed", context=operator.tail)
    old, new = f"{namespace}-r0", "r0-renamed"
    status_before = get_hr(custom, namespace, "r0")["status"]
    mutating_before = len(mutating(wrapper.invocations()))
    coordination = k8s.CoordinationV1Api(api_client)
    claim_held_by(coordination, namespace, old, TEST_PEER)

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "r0", {"spec": {"releaseName": new}}
    )
    # It had its chance, twice: it looked at the claim again after the first wait.
    eventually(
        lambda: waits_decided(operator, namespace, "r0") >= 2,
        60,
        "the replica to wait for the peer's claim on the old release twice",
        context=operator.tail,
    )
    assert len(mutating(wrapper.invocations())) == mutating_before, "helm ran under the peer's claim"
    told = [event for event in events_for(core, namespace, "r0") if event[1] == "OperationInProgress"]
    assert len(told) == 1, told
    kind, _, message = told[0]
    assert kind == "Normal"
    assert f"Another operator replica, {TEST_PEER}, is running Helm on release {namespace}/{old}" in message
    assert get_hr(custom, namespace, "r0")["status"] == status_before, "the waiting replica wrote the status"

    coordination.delete_namespaced_lease(claim_lease_name(old), namespace)
    eventually(
        lambda: ready(hr := get_hr(custom, namespace, "r0")) and hr["status"].get("releaseName") == new,
        120,
        "the rename to go on once the peer let the old release go",
        context=operator.tail,
    )
    assert [entry["status"] for entry in helm.json("history", new, "--namespace", namespace)] == ["deployed"]
    assert helm.run("status", old, "--namespace", namespace, check=False).returncode != 0, (
        "the old release was not uninstalled"
    )
    assert coordination.list_namespaced_lease(namespace).items == [], "a claim left behind"
    assert not re.search(r"Traceback", operator.log())


def test_a_helmrelease_recreated_while_its_uninstall_runs_ends_deployed_once_with_the_new_spec(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    chart_repo: Any,
    helm: Helm,
    tmp_path: Path,
) -> None:
    wrapper = HelmWrapper.create(tmp_path / "helm-wrapper")
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    operator = start_operator(helm=str(wrapper.path))
    # No readiness annotation: the Deployment never becomes ready, so `--wait` holds the install until deleted.
    create_hr(
        custom,
        namespace,
        helmrelease("again", chart, {"deploymentAnnotations": None}, wait=True, timeout=600),
    )
    release = f"{namespace}-again"
    eventually(
        lambda: helm.json("list", "--namespace", namespace, "--pending"),
        60,
        "the install to be under way (a pending release)",
        context=operator.tail,
    )
    old_uid = get_hr(custom, namespace, "again")["metadata"]["uid"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
    new_spec = helmrelease("again", chart, slow("new", 1), wait=True)

    def recreate() -> bool:
        try:
            create_hr(custom, namespace, new_spec)
        except ApiException as error:
            if error.status == 409:  # the old one still holds our finalizer: its uninstall runs
                return False
            raise
        return True

    eventually(recreate, 120, "the HelmRelease to be recreated", interval=0.05, context=operator.tail)
    new = get_hr(custom, namespace, "again")
    assert new["metadata"]["uid"] != old_uid
    eventually(
        lambda: (hr := find_hr(custom, namespace, "again")) is not None and ready(hr),
        180,
        "the recreated HelmRelease to be Ready",
        context=operator.tail,
    )
    history = helm.json("history", release, "--namespace", namespace)
    values = helm.json("get", "values", release, "--namespace", namespace)
    assert [entry["status"] for entry in history] == ["deployed"], history
    assert values["message"] == "new", values
    # Helm's storage holds one revision of one release: nothing left of the cancelled install.
    storage = core.list_namespaced_secret(namespace, label_selector="owner=helm").items
    assert [(secret.metadata.labels["name"], secret.metadata.labels["version"]) for secret in storage] == [
        (release, "1")
    ], storage
    found = overlaps(wrapper.invocations())
    assert not found, found
    assert not re.search(r"Traceback", operator.log()), operator.log()
    # No finalizer stuck: the new object goes away when deleted, its release with it.
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
    eventually(
        lambda: find_hr(custom, namespace, "again") is None,
        120,
        "the new HelmRelease to be gone",
        context=operator.tail,
    )
    assert helm.run("status", release, "--namespace", namespace, check=False).returncode != 0
    print(f"\ndelete-recreate: {len(mutating(wrapper.invocations()))} mutating helm runs, history {history}")
