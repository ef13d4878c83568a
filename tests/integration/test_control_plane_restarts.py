"""kube-apiserver and etcd restarted under a running operator: its watches resume, no change is lost or applied
twice, and its liveness probe reports the stalled watch meanwhile instead of staying green.

These tests restart a control plane of their own (one for this module), never the session's, so the other tests
never see an outage. The apiserver test puts a TCP proxy between the operator and the apiserver and keeps it cut
from the moment the apiserver stops until the test has made its changes on the restarted apiserver: those changes
are made while the operator can see nothing, which is what "a change made during the outage" means to it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from tests.conftest import CRD_PATH
from tests.support import controlplane
from tests.support.charts import ChartRepository
from tests.support.helm_wrapper import BEFORE, HelmWrapper
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.operator import GROUP, PLURAL, VERSION, Operator, condition, find_hr, helmrelease, ready
from tests.support.procs import free_port
from tests.support.tcpproxy import TcpProxy
from tests.support.wait import eventually

#: The liveness bound the operator runs with here (the default is 180s): watch requests are renewed every 6s.
STALL_AFTER = 20.0
RELEASES = 3


@dataclass
class OwnCluster:
    """A control plane of this module's own, with clients and a helm bound to it."""

    plane: controlplane.ControlPlane
    api: k8s.ApiClient
    custom: k8s.CustomObjectsApi
    core: k8s.CoreV1Api
    helm: Helm
    workdir: Path

    def namespace(self, name: str) -> str:
        self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        self.core.create_namespaced_service_account(
            name, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
        )
        return name

    def items(self, namespace: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL
        )["items"]
        return listed

    def patch_values(self, namespace: str, name: str, values: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"values": values}}
        )

    def revisions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.helm.json(
            "history", f"{namespace}-{name}", "--namespace", namespace
        )
        return history

    def values(self, namespace: str, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.helm.json("get", "values", f"{namespace}-{name}", "--namespace", namespace)
        return got


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory, helm_home: Path) -> Iterator[OwnCluster]:
    workdir = tmp_path_factory.mktemp("own-plane")
    plane = controlplane.start(workdir / "controlplane")
    try:
        kubectl(plane.kubeconfig, "apply", "--server-side", "-f", str(CRD_PATH))
        kubectl(
            plane.kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/helmreleases.helm.fluxcd.io",
        )
        api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
        helm = Helm.create("helm", workdir / "helm", plane.kubeconfig)
        try:
            yield OwnCluster(plane, api, k8s.CustomObjectsApi(api), k8s.CoreV1Api(api), helm, workdir)
        finally:
            api.close()
    finally:
        plane.stop()


def probe(url: str) -> tuple[int, str]:
    """The liveness endpoint's status and body, as the kubelet reads them."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def red(url: str) -> tuple[int, str] | None:
    """The probe's answer once it fails (503), None while it passes."""
    answer = probe(url)
    return answer if answer[0] == 503 else None


def start_operator(
    cluster: OwnCluster, namespace: str, kubeconfig: Path, helm: str = "helm"
) -> tuple[Operator, str]:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    operator = Operator(
        cluster.workdir / namespace,
        kubeconfig,
        [namespace],
        helm=helm,
        extra_args=("--liveness", url, "--watch-stall-after", str(STALL_AFTER)),
    ).start()
    return operator, url


def all_ready(cluster: OwnCluster, namespace: str, names: list[str], generation: int) -> bool:
    found = {item["metadata"]["name"]: item for item in cluster.items(namespace)}
    return all(
        name in found and ready(found[name]) and found[name]["metadata"]["generation"] == generation
        for name in names
    )


def stays_green_while_quiet(url: str, since: float, operator: Operator) -> None:
    """The probe answers 200 until more than the bound has passed since the last event: quiet is not stalled."""
    while time.monotonic() < since + 1.5 * STALL_AFTER:
        status, body = probe(url)
        assert status == 200, f"{body}\n{operator.tail()}"
        time.sleep(1)


def apply_until_accepted(action: Any, what: str) -> None:
    """Do `action` against a server that may still be coming up: retried on transport errors and 5xx only."""

    def attempt() -> bool:
        try:
            action()
        except ApiException as error:
            if error.status is not None and error.status < 500:
                raise
            raise ConnectionError(str(error)) from None
        return True

    eventually(attempt, 60, what, ignoring=(ConnectionError, urllib3.exceptions.HTTPError, OSError))


def test_an_apiserver_restart_loses_no_change_and_the_probe_reports_the_stalled_watch(
    own_cluster: OwnCluster, chart_repo: ChartRepository
) -> None:
    cluster = own_cluster
    namespace = cluster.namespace("apiserver-restart")
    plane = cluster.plane
    port = int(plane.server.rsplit(":", 1)[1])
    proxy = TcpProxy("127.0.0.1", port).start()
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    names = [f"r{index}" for index in range(RELEASES)]
    try:
        proxied = proxy.kubeconfig(plane.kubeconfig, cluster.workdir / f"{namespace}-proxied")
        operator, url = start_operator(cluster, namespace, proxied)
        try:
            for name in names:
                cluster.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, helmrelease(name, chart, {"message": "one"})
                )
            eventually(
                lambda: all_ready(cluster, namespace, names, 1),
                120,
                "all releases Ready",
                context=operator.tail,
            )
            stays_green_while_quiet(url, time.monotonic(), operator)

            # The outage: the operator loses the apiserver, which then really restarts.
            proxy.cut()
            plane.stop_apiserver()
            cut = time.monotonic()
            _, body = eventually(
                lambda: red(url),
                STALL_AFTER + 60,
                "the liveness probe to report the stalled watch",
                context=operator.tail,
            )
            reported_after = time.monotonic() - cut
            plane.start_apiserver()  # before any assertion: the next test shares this control plane
            # Whichever watch passed the bound first is named (the HelmReleases', the CRDs', ...): one suffices.
            assert "delivered nothing (no event, no bookmark)" in body, body
            assert body.startswith("the watch of "), body

            # Changes the operator cannot see yet: an update, a creation and a deletion.
            apply_until_accepted(
                lambda: cluster.patch_values(namespace, "r0", {"message": "two"}), "the update of r0"
            )
            apply_until_accepted(
                lambda: cluster.patch_values(namespace, "r1", {"message": "two"}), "the update of r1"
            )
            apply_until_accepted(
                lambda: cluster.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, helmrelease("late", chart, {"message": "late"})
                ),
                "the creation of late",
            )
            apply_until_accepted(
                lambda: cluster.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "r2"
                ),
                "the deletion of r2",
            )
            assert probe(url)[0] == 503  # nothing reached the operator yet
            proxy.restore()
            restored = time.monotonic()

            eventually(
                lambda: (
                    all_ready(cluster, namespace, ["r0", "r1"], 2)
                    and all_ready(cluster, namespace, ["late"], 1)
                ),
                120,
                "the update, the creation and the deletion made during the outage to be applied",
                context=operator.tail,
            )
            eventually(
                lambda: find_hr(cluster.custom, namespace, "r2") is None,
                120,
                "r2 to be uninstalled and its finalizer released",
                context=operator.tail,
            )
            converged = time.monotonic() - restored
            eventually(lambda: probe(url)[0] == 200, 60, "the probe to be green again", context=operator.tail)
            log = operator.log()
        finally:
            operator.stop()
    finally:
        proxy.stop()

    assert cluster.values(namespace, "r0") == {"message": "two"}
    assert cluster.values(namespace, "r1") == {"message": "two"}
    assert cluster.values(namespace, "late") == {"message": "late"}
    assert (
        cluster.helm.run("status", f"{namespace}-r2", "--namespace", namespace, check=False).returncode != 0
    )
    # Each change applied once: one install and one upgrade, nothing pending, nothing repeated.
    for name, expected in (("r0", 2), ("r1", 2), ("late", 1)):
        history = cluster.revisions(namespace, name)
        assert [entry["status"] for entry in history] == ["superseded"] * (expected - 1) + ["deployed"], (
            history
        )
    for item in cluster.items(namespace):
        assert condition(item, "Ready").get("status") == "True", item.get("status")
    assert "Traceback" not in log, log
    print(
        f"\napiserver restart: probe red {reported_after:.1f}s after the cut (bound {STALL_AFTER:g}s); "
        f"4 changes made during the outage converged {converged:.1f}s after it; lost 0, duplicated 0"
    )


def test_an_etcd_restart_loses_no_change_and_leaves_the_probe_green_afterwards(
    own_cluster: OwnCluster, chart_repo: ChartRepository
) -> None:
    cluster = own_cluster
    namespace = cluster.namespace("etcd-restart")
    plane = cluster.plane
    chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
    names = [f"e{index}" for index in range(RELEASES)]
    wrapper = HelmWrapper.create(cluster.workdir / namespace / "helm-wrapper")
    operator, url = start_operator(cluster, namespace, plane.kubeconfig, helm=str(wrapper.path))
    answers: list[tuple[int, str]] = []
    try:
        for name in names:
            cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, helmrelease(name, chart, {"message": "one"})
            )
        eventually(
            lambda: all_ready(cluster, namespace, names, 1), 120, "all releases Ready", context=operator.tail
        )

        # A change the operator acts on while etcd is gone: its upgrade, or the status it writes, fails.
        # The upgrade is held before helm starts until etcd is down, so the outage meets it for certain.
        upgrade = wrapper.arm(BEFORE, "upgrade", release=f"{namespace}-e0")
        cluster.patch_values(namespace, "e0", {"message": "two"})
        upgrade.wait_held(context=operator.tail)
        plane.stop_etcd()
        upgrade.open()
        eventually(
            lambda: any(
                call.helm_start is not None for call in wrapper.calls("upgrade", release=f"{namespace}-e0")
            ),
            60,
            "the operator's helm upgrade to run while etcd is down",
            context=operator.tail,
        )
        answers.append(probe(url))
        plane.start_etcd()
        # A change right after etcd is back, before anything else has settled.
        apply_until_accepted(
            lambda: cluster.patch_values(namespace, "e1", {"message": "two"}), "the update of e1"
        )
        answers.append(probe(url))
        eventually(
            lambda: all_ready(cluster, namespace, ["e0", "e1"], 2),
            180,
            "both changes to be applied after the etcd restart",
            context=operator.tail,
        )
        # e2 was not changed: a later change of it is seen too (the watch resumed, not only a relist).
        cluster.patch_values(namespace, "e2", {"message": "three"})
        eventually(
            lambda: all_ready(cluster, namespace, ["e2"], 2),
            120,
            "a change after the restart",
            context=operator.tail,
        )
        eventually(lambda: probe(url)[0] == 200, 60, "the probe to be green", context=operator.tail)
        log = operator.log()
    finally:
        operator.stop()

    assert cluster.values(namespace, "e0") == {"message": "two"}
    assert cluster.values(namespace, "e1") == {"message": "two"}
    assert cluster.values(namespace, "e2") == {"message": "three"}
    statuses = {name: [entry["status"] for entry in cluster.revisions(namespace, name)] for name in names}
    assert "Traceback" not in log, log
    print(
        f"\netcd restart: probe answers during/after: {[a[0] for a in answers]}; helm history: {json.dumps(statuses)}"
    )
    for name in names:
        assert statuses[name][-1] == "deployed", statuses
        assert not any(status.startswith("pending") for status in statuses[name]), statuses
        assert len(statuses[name]) == 2, statuses  # one install, one upgrade: nothing applied twice
