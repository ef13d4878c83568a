"""SIGKILL of the operator (its process group, helm included) at exact points of every Helm action, then a restart.

The operator runs helm through `tests/support/helm_wrapper.py`, which stops one chosen invocation before the real
helm starts or after it returned (its output not yet read), so each kill lands where it is named, without sleeps.
"While helm runs" is a release Helm holds in `pending-*` (a Deployment that is not ready for ten minutes), and
"before the status is written" is the helm read the operator makes between an action and its status write (`helm get
metadata` after a deploy, to mark its resources, or after a test; `helm history` after a rollback), held at its
start. After the restart every release must
end `deployed` with the latest values, nothing `pending-*`, every HelmRelease deletable (its finalizer released), and
`helm history` must show each change applied once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from tests.support.charts import ChartRepository
from tests.support.helm_wrapper import AFTER, BEFORE, Gate, HelmWrapper
from tests.support.helmtool import Helm
from tests.support.operator import (
    Operator,
    StartOperator,
    condition,
    create_hr,
    delete_and_wait_gone,
    events_for,
    find_hr,
    get_hr,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.wait import eventually

from helmrelease.api.constants import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

#: Generous: a loaded 2-core machine runs helm, the apiserver and a few of these at once. Waits end at the event.
TIMEOUT = 180
#: A Deployment with this annotation value is not ready for ten minutes: helm --wait holds the release pending.
NEVER_READY = {"test.helmrelease.dev/ready-after-seconds": "600"}
SOON_READY = {"test.helmrelease.dev/ready-after-seconds": "1"}
REQUESTED, FORCE = "reconcile.fluxcd.io/requestedAt", "reconcile.fluxcd.io/forceAt"


@dataclass
class Crash:
    """What a scenario needs: the cluster clients, the test's own helm, the wrapper and a way to (re)start."""

    custom: k8s.CustomObjectsApi
    core: k8s.CoreV1Api
    helm: Helm
    namespace: str
    wrapper: HelmWrapper
    start: Callable[[], Operator]
    operator: Operator

    def restart(self) -> Operator:
        self.operator = self.start()
        return self.operator

    def kill_at(self, gate: Gate) -> None:
        """Kill the operator once an invocation stands at `gate`; it and the held helm are dead on return."""
        gate.wait_held(TIMEOUT, context=self.operator.tail)
        self.operator.kill()
        gate.open()  # nothing stands there any more; the restarted operator must not be held

    def kill_after(self, first: Gate, point: str, subcommand: str, release: str) -> None:
        """Kill at the next `helm <subcommand>` of `release` after the one standing at `first` (at `point`)."""
        first.wait_held(TIMEOUT, context=self.operator.tail)
        then = self.wrapper.arm(point, subcommand, release=release)
        first.open()
        self.kill_at(then)

    def kill_while_pending(self, release: str, status: str) -> None:
        """Kill the operator while helm holds `release` in `status` (pending-install, pending-upgrade)."""
        eventually(
            lambda: (revisions := self.history(release)) and revisions[-1][1] == status,
            TIMEOUT,
            f"helm to hold {release} in {status}",
            context=self.operator.tail,
        )
        self.operator.kill()
        assert self.history(release)[-1][1] == status, "nothing finished the action after the kill"

    def history(self, release: str) -> list[tuple[int, str]]:
        result = self.helm.run(
            "history", release, "--namespace", self.namespace, "--output", "json", check=False
        )
        if result.returncode != 0:
            if "not found" in result.stderr:
                return []
            raise AssertionError(result.stderr)
        return [(int(entry["revision"]), str(entry["status"])) for entry in json.loads(result.stdout)]

    def descriptions(self, release: str) -> list[str]:
        entries = self.helm.json("history", release, "--namespace", self.namespace)
        return [str(entry["description"]) for entry in entries]

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body)

    def wait_ready(self, name: str, generation: int) -> dict[str, Any]:
        return wait_for_hr(
            self.custom,
            self.namespace,
            name,
            lambda hr: ready(hr) and hr["status"].get("observedGeneration") == generation,
            timeout=TIMEOUT,
            operator=self.operator,
            what=f"Ready at generation {generation}",
        )

    def data(self, config_map: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(config_map, self.namespace).data or {})

    def converged(
        self,
        name: str,
        release: str,
        *,
        message: str,
        config_map: str | None = None,
        interrupted: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """Ready at the latest generation, deployed, the latest values live, nothing pending; returns the object."""
        generation = get_hr(self.custom, self.namespace, name)["metadata"]["generation"]
        hr = self.wait_ready(name, generation)
        assert hr["status"]["releaseStatus"] == "deployed"
        revisions = self.history(release)
        assert revisions[-1][1] == "deployed", revisions
        # Helm's rollback (our unlock) leaves the revision it abandons marked pending-* in the history: only
        # the revision the kill interrupted may read so, and the release itself is not locked.
        pending = [number for number, status in revisions if status.startswith("pending")]
        assert set(pending) <= interrupted, revisions
        assert hr["status"]["helmRevision"] == revisions[-1][0]
        live = self.core.read_namespaced_config_map(config_map or release, self.namespace)
        assert (live.data or {})["message"] == message
        antecedent = (live.metadata.annotations or {}).get("helm.fluxcd.io/antecedent")
        assert antecedent == f"{self.namespace}:helmrelease/{name}", "its resources are marked as ours"
        return hr

    def deleted(self, name: str, release: str) -> None:
        """The HelmRelease can be deleted (its finalizer is released) and its release goes with it."""
        delete_and_wait_gone(self.custom, self.namespace, name, timeout=TIMEOUT, operator=self.operator)
        assert self.history(release) == []


@pytest.fixture
def crash(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    helm: Helm,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Crash]:
    wrapper = HelmWrapper.create(tmp_path / "helm-wrapper")

    def start() -> Operator:
        return start_operator(helm=str(wrapper.path))

    yield Crash(custom, core, helm, namespace, wrapper, start, start())
    wrapper.disarm_all()


@pytest.fixture
def app_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}


@pytest.fixture
def tested_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "tested", "version": "0.1.0"}


def ran_helm(calls: list[Any]) -> list[Any]:
    """The invocations whose real helm was started (a kill before helm started leaves none)."""
    return [call for call in calls if call.helm_start is not None]


def completed(calls: list[Any]) -> list[Any]:
    """The invocations whose real helm returned with success."""
    return [call for call in calls if call.returncode == 0]


# --- install ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["before-helm", "while-helm-runs", "after-helm-returned"])
def test_killed_during_install(point: str, crash: Crash, app_chart: dict[str, str]) -> None:
    name, release = "inst", f"{crash.namespace}-inst"
    values: dict[str, Any] = {"message": "v1", "deploymentAnnotations": SOON_READY}
    if point == "while-helm-runs":
        values["deploymentAnnotations"] = NEVER_READY
    first = None
    if point == "before-helm":
        first = crash.wrapper.arm(BEFORE, "install", release=release)
    elif point in ("after-helm-returned", "before-status-written"):
        first = crash.wrapper.arm(AFTER, "install", release=release)
    create_hr(crash.custom, crash.namespace, helmrelease(name, app_chart, values, wait=True, timeout=900))
    message = "v1"
    if first is None:
        crash.kill_while_pending(release, "pending-install")
        # The latest values: ready soon, and a new message; the restart must install these.
        message = "v2"
        crash.patch_spec(name, {"values": {"message": message, "deploymentAnnotations": SOON_READY}})
    elif point == "before-status-written":
        # Once helm returned the operator marks the release's resources (`helm get metadata` first), then writes.
        crash.kill_after(first, BEFORE, "get", release)
        assert "helmRevision" not in (get_hr(crash.custom, crash.namespace, name).get("status") or {})
    else:
        crash.kill_at(first)
    crash.restart()
    crash.converged(name, release, message=message)
    installs = crash.wrapper.calls("install", release=release)
    if point == "while-helm-runs":
        # The interrupted install is removed (nothing to go back to) and the latest values installed once.
        assert len(completed(crash.wrapper.calls("uninstall", release=release))) == 1
        assert len(completed(installs)) == 1
    else:
        assert len(ran_helm(installs)) == 1, "one install, not two"
    if point in ("after-helm-returned", "before-status-written"):
        assert "AlreadyApplied" in {reason for _, reason, _ in events_for(crash.core, crash.namespace, name)}
    assert crash.history(release) == [(1, "deployed")]
    crash.deleted(name, release)


# --- upgrade ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["before-helm", "while-helm-runs", "after-helm-returned"])
def test_killed_during_upgrade(point: str, crash: Crash, app_chart: dict[str, str]) -> None:
    name, release = "upg", f"{crash.namespace}-upg"
    values = {"message": "v1", "deploymentAnnotations": SOON_READY}
    create_hr(crash.custom, crash.namespace, helmrelease(name, app_chart, values, wait=True, timeout=900))
    crash.wait_ready(name, 1)
    message = "v2"
    if point == "while-helm-runs":
        crash.patch_spec(name, {"values": {"message": "v2", "deploymentAnnotations": NEVER_READY}})
        crash.kill_while_pending(release, "pending-upgrade")
        message = "v3"
        crash.patch_spec(name, {"values": {"message": message, "deploymentAnnotations": SOON_READY}})
    else:
        first = crash.wrapper.arm(BEFORE if point == "before-helm" else AFTER, "upgrade", release=release)
        crash.patch_spec(name, {"values": {"message": message}})
        if point == "before-status-written":
            crash.kill_after(first, BEFORE, "get", release)
            assert get_hr(crash.custom, crash.namespace, name)["status"]["helmRevision"] == 1, "not recorded"
        else:
            crash.kill_at(first)
    crash.restart()
    interrupted = frozenset({2}) if point == "while-helm-runs" else frozenset()
    crash.converged(name, release, message=message, interrupted=interrupted)
    upgrades = crash.wrapper.calls("upgrade", release=release)
    if point == "while-helm-runs":
        # The interrupted upgrade (2) is rolled back (3), then the latest values go in once (4).
        assert [revision for revision, _ in crash.history(release)] == [1, 2, 3, 4]
        assert crash.descriptions(release)[2] == "Rollback to 1"
        assert len(completed(upgrades)) == 1
    else:
        assert crash.history(release) == [(1, "superseded"), (2, "deployed")], "one upgrade, not two"
        assert len(ran_helm(upgrades)) == 1
    crash.deleted(name, release)


# --- test ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["before-helm", "after-helm-returned", "before-status-written"])
def test_killed_during_helm_test(point: str, crash: Crash, tested_chart: dict[str, str]) -> None:
    name, release = "tst", f"{crash.namespace}-tst"
    first = crash.wrapper.arm(BEFORE if point == "before-helm" else AFTER, "test", release=release)
    body = helmrelease(name, tested_chart, {"message": "v1"}, test={"enable": True, "timeout": 120})
    create_hr(crash.custom, crash.namespace, body)
    if point == "before-status-written":
        # After the test returned the operator reads where the release stands (`helm get metadata`), then writes.
        crash.kill_after(first, BEFORE, "get", release)
    else:
        crash.kill_at(first)
    crash.restart()
    hr = crash.converged(name, release, message="v1", config_map=f"{release}-config")
    assert condition(hr, "Tested")["status"] == "True"
    assert crash.history(release) == [(1, "deployed")], "a test changes no revision; the install ran once"
    assert len(completed(crash.wrapper.calls("install", release=release))) == 1
    crash.deleted(name, release)


# --- rollback -----------------------------------------------------------------------------------------------------


def arm_rollback(crash: Crash, point: str, release: str) -> Gate | None:
    """The gate for `point` of the rollback to come (for before-status-written: the rollback returned, see below)."""
    if point == "before-helm":
        return crash.wrapper.arm(BEFORE, "rollback", release=release)
    return crash.wrapper.arm(AFTER, "rollback", release=release)


def kill_at_rollback(crash: Crash, point: str, gate: Gate, release: str) -> None:
    if point == "before-status-written":
        # After the rollback the operator reads `helm history` (which revision it went back to), then writes.
        crash.kill_after(gate, BEFORE, "history", release)
    else:
        crash.kill_at(gate)


@pytest.mark.parametrize("point", ["before-helm", "after-helm-returned", "before-status-written"])
def test_killed_during_rollback_after_a_failed_test(
    point: str, crash: Crash, tested_chart: dict[str, str]
) -> None:
    name, release = "rbt", f"{crash.namespace}-rbt"
    body = helmrelease(
        name,
        tested_chart,
        {"message": "v1", "testExitCode": 0},
        test={"enable": True, "timeout": 120},
        rollback={"enable": True},
    )
    create_hr(crash.custom, crash.namespace, body)
    crash.wait_ready(name, 1)
    gate = arm_rollback(crash, point, release)
    crash.patch_spec(name, {"values": {"message": "v2", "testExitCode": 1}})
    kill_at_rollback(crash, point, gate, release)
    crash.restart()
    hr = wait_for_hr(
        crash.custom,
        crash.namespace,
        name,
        lambda hr: (
            hr.get("status", {}).get("phase") == "RolledBack" and hr["status"].get("observedGeneration") == 2
        ),
        timeout=TIMEOUT,
        operator=crash.operator,
        what="phase RolledBack at generation 2",
    )
    assert hr["status"]["rollbackCount"] == 1
    assert crash.history(release) == [(1, "superseded"), (2, "superseded"), (3, "deployed")], "one rollback"
    assert crash.descriptions(release)[2] == "Rollback to 1"
    assert crash.data(f"{release}-config")["message"] == "v1"
    # Fixed by the user: the latest values go in once, and pass their test.
    crash.patch_spec(name, {"values": {"message": "v3", "testExitCode": 0}})
    hr = crash.converged(name, release, message="v3", config_map=f"{release}-config")
    assert condition(hr, "Tested")["status"] == "True"
    assert [revision for revision, _ in crash.history(release)] == [1, 2, 3, 4]
    crash.deleted(name, release)


@pytest.mark.parametrize("point", ["before-helm", "after-helm-returned", "before-status-written"])
def test_killed_during_rollback_after_a_failed_upgrade(
    point: str, crash: Crash, app_chart: dict[str, str]
) -> None:
    name, release = "rbu", f"{crash.namespace}-rbu"
    body = helmrelease(name, app_chart, {"message": "v1"}, rollback={"enable": True}, timeout=60)
    create_hr(crash.custom, crash.namespace, body)
    crash.wait_ready(name, 1)
    gate = arm_rollback(crash, point, release)
    crash.patch_spec(name, {"values": {"message": "v2", "failure": "apply"}})
    kill_at_rollback(crash, point, gate, release)
    crash.restart()
    hr = wait_for_hr(
        crash.custom,
        crash.namespace,
        name,
        lambda hr: (
            hr.get("status", {}).get("phase") == "RolledBack" and hr["status"].get("observedGeneration") == 2
        ),
        timeout=TIMEOUT,
        operator=crash.operator,
        what="phase RolledBack at generation 2",
    )
    assert (hr["status"]["rollbackCount"], hr["status"]["helmRevision"]) == (1, 3)
    assert crash.history(release) == [(1, "superseded"), (2, "failed"), (3, "deployed")], "one rollback"
    assert crash.data(release)["message"] == "v1"
    crash.patch_spec(name, {"values": {"message": "v3", "failure": "none"}})
    crash.converged(name, release, message="v3")
    assert [revision for revision, _ in crash.history(release)] == [1, 2, 3, 4]
    crash.deleted(name, release)


# --- uninstall ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["before-helm", "between-uninstall-and-finalizer-removal"])
def test_killed_during_uninstall(point: str, crash: Crash, app_chart: dict[str, str]) -> None:
    name, release = "uni", f"{crash.namespace}-uni"
    create_hr(crash.custom, crash.namespace, helmrelease(name, app_chart, {"message": "v1"}))
    crash.wait_ready(name, 1)
    gate = crash.wrapper.arm(BEFORE if point == "before-helm" else AFTER, "uninstall", release=release)
    crash.custom.delete_namespaced_custom_object(GROUP, VERSION, crash.namespace, PLURAL, name)
    crash.kill_at(gate)
    assert find_hr(crash.custom, crash.namespace, name) is not None, "the finalizer holds it meanwhile"
    assert crash.history(release) == ([(1, "deployed")] if point == "before-helm" else [])
    crash.restart()
    eventually(
        lambda: find_hr(crash.custom, crash.namespace, name) is None,
        TIMEOUT,
        "the HelmRelease to be finalized by the restarted operator",
        context=crash.operator.tail,
    )
    assert crash.history(release) == []
    assert len(completed(crash.wrapper.calls("uninstall", release=release))) == 1, "uninstalled once"


# --- adoption -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["before-helm", "while-helm-runs", "after-helm-returned"])
def test_killed_while_adopting_a_release(
    point: str, crash: Crash, app_chart: dict[str, str], chart_repo: ChartRepository
) -> None:
    name, release = "adopt", f"{crash.namespace}-adopt"
    crash.helm.run(
        "install",
        release,
        "app",
        "--repo",
        chart_repo.url,
        "--version",
        "0.1.0",
        "--namespace",
        crash.namespace,
        "--set",
        "message=by-hand",
    )
    values: dict[str, Any] = {"message": "v1", "deploymentAnnotations": SOON_READY}
    first = None
    if point == "while-helm-runs":
        values["deploymentAnnotations"] = NEVER_READY
    else:
        first = crash.wrapper.arm(BEFORE if point == "before-helm" else AFTER, "upgrade", release=release)
    create_hr(crash.custom, crash.namespace, helmrelease(name, app_chart, values, wait=True, timeout=900))
    message = "v1"
    if first is None:
        crash.kill_while_pending(release, "pending-upgrade")
        message = "v2"
        crash.patch_spec(name, {"values": {"message": message, "deploymentAnnotations": SOON_READY}})
    elif point == "before-status-written":
        crash.kill_after(first, BEFORE, "get", release)
    else:
        crash.kill_at(first)
    crash.restart()
    interrupted = frozenset({2}) if point == "while-helm-runs" else frozenset()
    crash.converged(name, release, message=message, interrupted=interrupted)
    upgrades = crash.wrapper.calls("upgrade", release=release)
    if point == "while-helm-runs":
        assert [revision for revision, _ in crash.history(release)] == [1, 2, 3, 4]
        assert len(completed(upgrades)) == 1
    else:
        assert crash.history(release) == [(1, "superseded"), (2, "deployed")], "adopted once"
        assert len(ran_helm(upgrades)) == 1
    crash.deleted(name, release)


# --- a forced upgrade ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["after-helm-returned"])
def test_killed_during_a_forced_upgrade(point: str, crash: Crash, app_chart: dict[str, str]) -> None:
    name, release = "frc", f"{crash.namespace}-frc"
    create_hr(crash.custom, crash.namespace, helmrelease(name, app_chart, {"message": "v1"}))
    crash.wait_ready(name, 1)
    upgraded = crash.wrapper.arm(AFTER, "upgrade", release=release)
    crash.annotate(name, {REQUESTED: "f1", FORCE: "f1"})
    if point == "before-status-written":
        # The write that records the forced upgrade echoes the token too: killed before it, neither is written.
        crash.kill_after(upgraded, BEFORE, "get", release)
    else:
        crash.kill_at(upgraded)
    assert "lastHandledForceAt" not in get_hr(crash.custom, crash.namespace, name)["status"]
    crash.restart()
    hr = wait_for_hr(
        crash.custom,
        crash.namespace,
        name,
        lambda hr: hr.get("status", {}).get("lastHandledForceAt") == "f1" and ready(hr),
        timeout=TIMEOUT,
        operator=crash.operator,
        what="the force handled and Ready",
    )
    assert hr["status"]["lastHandledReconcileAt"] == "f1"
    assert crash.history(release) == [(1, "superseded"), (2, "deployed")], "one forced upgrade, not two"
    assert len(ran_helm(crash.wrapper.calls("upgrade", release=release))) == 1
    crash.converged(name, release, message="v1")
    crash.deleted(name, release)


def test_killed_after_a_failed_forced_upgrade_was_rolled_back(
    crash: Crash, app_chart: dict[str, str]
) -> None:
    """The force ran (its upgrade failed, the rollback returned) but was not echoed yet: the restart records the
    rollback and echoes the force; it does not force, fail and roll back a second time."""
    name, release = "frb", f"{crash.namespace}-frb"
    body = helmrelease(name, app_chart, {"message": "v1"}, rollback={"enable": True}, timeout=60)
    create_hr(crash.custom, crash.namespace, body)
    crash.wait_ready(name, 1)
    rolled_back = crash.wrapper.arm(AFTER, "rollback", release=release)
    crash.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        crash.namespace,
        PLURAL,
        name,
        {
            "metadata": {"annotations": {REQUESTED: "f1", FORCE: "f1"}},
            "spec": {"values": {"message": "v2", "failure": "apply"}},
        },
    )
    crash.kill_at(rolled_back)
    assert "lastHandledForceAt" not in get_hr(crash.custom, crash.namespace, name)["status"]
    assert crash.history(release) == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    crash.restart()
    hr = wait_for_hr(
        crash.custom,
        crash.namespace,
        name,
        lambda hr: hr.get("status", {}).get("lastHandledForceAt") == "f1",
        timeout=TIMEOUT,
        operator=crash.operator,
        what="the force echoed",
    )
    assert (hr["status"]["phase"], hr["status"]["helmRevision"]) == ("RolledBack", 3)
    assert crash.history(release) == [(1, "superseded"), (2, "failed"), (3, "deployed")], "forced once"
    assert len(ran_helm(crash.wrapper.calls("upgrade", release=release))) == 1
    assert len(ran_helm(crash.wrapper.calls("rollback", release=release))) == 1
    crash.patch_spec(name, {"values": {"message": "v3", "failure": "none"}})
    crash.converged(name, release, message="v3")
    crash.deleted(name, release)
