"""The reconciler end to end: the real operator process, kube-apiserver, helm (v4 and v3) and chart repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    StartOperator,
    condition,
    create_config_map,
    create_hr,
    delete_and_wait_gone,
    events_for,
    get_hr,
    helmrelease,
    ready,
    wait_for_condition,
    wait_for_hr,
    wait_for_resyncs,
)
from tests.support.procs import binary
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")


@pytest.fixture
def app_chart(chart_repo: ChartRepository) -> dict[str, str]:
    return {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}


create = create_hr


def patch(custom: k8s.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})


def history(helm: Helm, namespace: str, release: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = helm.json("history", release, "--namespace", namespace)
    return entries


def config_map(core: k8s.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    return dict(core.read_namespaced_config_map(name, namespace).data or {})


def generation_ready(generation: int) -> Callable[[dict[str, Any]], bool]:
    return lambda hr: ready(hr) and hr["status"].get("observedGeneration") == generation


# --- the lifecycle ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("helm_binary", ["helm", "helm3"])
def test_lifecycle_install_upgrade_uninstall(
    helm_binary: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator(helm=helm_binary)
    create(custom, namespace, helmrelease("web", app_chart, {"message": "one", "image": {"tag": "1.0.0"}}))
    hr = wait_for_hr(custom, namespace, "web", ready, operator=operator, what="Ready")
    release = f"{namespace}-web"
    status = hr["status"]
    assert status["releaseName"] == release
    assert status["releaseStatus"] == "deployed"
    assert status["revision"] == "0.1.0"
    assert status["phase"] == "Succeeded"
    assert condition(hr, "Released")["status"] == "True"
    assert config_map(core, namespace, release)["message"] == "one"
    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment(release, namespace)
    assert deployment.metadata.annotations["helm.fluxcd.io/antecedent"] == f"{namespace}:helmrelease/web"
    assert deployment.spec.template.spec.containers[0].image == "example.invalid/app:1.0.0"

    # values change → one upgrade
    patch(custom, namespace, "web", {"values": {"message": "two", "image": {"tag": "1.0.0"}}})
    wait_for_hr(
        custom, namespace, "web", generation_ready(2), operator=operator, what="Ready at generation 2"
    )
    assert config_map(core, namespace, release)["message"] == "two"
    # chart version change → one more
    patch(custom, namespace, "web", {"chart": {**app_chart, "version": "0.2.0"}})
    hr = wait_for_hr(
        custom, namespace, "web", generation_ready(3), operator=operator, what="Ready at generation 3"
    )
    assert hr["status"]["revision"] == "0.2.0"
    assert config_map(core, namespace, release)["chartVersion"] == "0.2.0"
    assert [entry["revision"] for entry in history(helm, namespace, release)] == [1, 2, 3]
    reasons = [reason for _, reason, _ in events_for(core, namespace, "web")]
    assert reasons.count("InstallSucceeded") == 1
    assert reasons.count("UpgradeSucceeded") == 2

    delete_and_wait_gone(custom, namespace, "web", operator=operator)
    assert helm.json("list", "--namespace", namespace) == []


def test_unchanged_release_is_not_upgraded_on_resync(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator(resync_interval=1)
    create(custom, namespace, helmrelease("steady", app_chart, {"message": "same"}))
    wait_for_hr(custom, namespace, "steady", ready, operator=operator)
    wait_for_resyncs(custom, namespace, "steady", 3, operator=operator)
    revisions = [entry["revision"] for entry in history(helm, namespace, f"{namespace}-steady")]
    assert revisions == [1], operator.tail()


def test_values_from_config_map_change_triggers_upgrade(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    create_config_map(core, namespace, "web-values", {"values.yaml": "message: v1\n"})
    operator = start_operator()
    create(
        custom,
        namespace,
        helmrelease("cm", app_chart, valuesFrom=[{"configMapKeyRef": {"name": "web-values"}}]),
    )
    wait_for_hr(custom, namespace, "cm", ready, operator=operator)
    release = f"{namespace}-cm"
    assert config_map(core, namespace, release)["message"] == "v1"
    core.patch_namespaced_config_map("web-values", namespace, {"data": {"values.yaml": "message: v2\n"}})
    eventually(
        lambda: config_map(core, namespace, release)["message"] == "v2",
        60,
        "the upgrade to the ConfigMap's new values",
        context=operator.tail,
    )


def test_failed_upgrade_rolls_back(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create(
        custom,
        namespace,
        helmrelease("rb", app_chart, {"message": "good"}, rollback={"enable": True}, timeout=30),
    )
    wait_for_hr(custom, namespace, "rb", ready, operator=operator)
    patch(custom, namespace, "rb", {"values": {"message": "bad", "failure": "apply"}})
    hr = wait_for_hr(
        custom,
        namespace,
        "rb",
        lambda hr: hr.get("status", {}).get("phase") == "RolledBack",
        operator=operator,
        what="phase RolledBack",
    )
    assert hr["status"]["rollbackCount"] == 1
    assert condition(hr, "RolledBack")["status"] == "True"
    assert condition(hr, "Ready")["status"] == "False"
    release = f"{namespace}-rb"
    entries = history(helm, namespace, release)
    assert [(entry["status"], entry["description"]) for entry in entries[1:]] == [
        ("failed", entries[1]["description"]),
        ("deployed", "Rollback to 1"),
    ]
    # Helm records the rollback as revision 3: the message names the revision it went back to.
    assert condition(hr, "RolledBack")["message"] == (
        f"Rolled back release {namespace}/{release} to revision 1 (now revision 3, rollback 1)"
    )
    assert config_map(core, namespace, release)["message"] == "good"
    reasons = {reason for _, reason, _ in events_for(core, namespace, "rb")}
    assert {"UpgradeFailed", "RollbackSucceeded"} <= reasons


def test_when_rollback_retries_are_exhausted_the_condition_says_so(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    rollback = {"enable": True, "retry": True, "maxRetries": 1}
    create(
        custom, namespace, helmrelease("ex", app_chart, {"message": "good"}, rollback=rollback, timeout=30)
    )
    wait_for_hr(custom, namespace, "ex", ready, operator=operator)
    patch(custom, namespace, "ex", {"values": {"message": "bad", "failure": "apply"}})
    hr = wait_for_condition(
        custom, namespace, "ex", "Ready", reason="RetriesExhausted", operator=operator, timeout=120
    )
    release = f"{namespace}-ex"
    # install, failed upgrade, rollback, failed retry, rollback: and then nothing more
    assert [entry["status"] for entry in history(helm, namespace, release)] == [
        "superseded",
        "failed",
        "superseded",
        "failed",
        "deployed",
    ]
    message = condition(hr, "Released")["message"]
    assert condition(hr, "Released")["reason"] == "RetriesExhausted"
    assert "rollback.maxRetries (1) is used up, so no retry is coming" in message
    assert "edit the HelmRelease" in message
    assert hr["status"]["observedGeneration"] == 2, "a final outcome for this generation"
    assert "RetriesExhausted" in {reason for _, reason, _ in events_for(core, namespace, "ex")}


@pytest.mark.parametrize(
    ("exit_code", "ignore_failures", "expected_phase", "tested", "ready_status"),
    [
        pytest.param(0, False, "Succeeded", "True", "True", id="pass"),
        pytest.param(1, False, "TestFailed", "False", "False", id="fail"),
        pytest.param(1, True, "Succeeded", "False", "True", id="fail-ignored"),
    ],
)
def test_helm_test(
    exit_code: int,
    ignore_failures: bool,
    expected_phase: str,
    tested: str,
    ready_status: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    operator = start_operator()
    chart = {"repository": chart_repo.url, "name": "tested", "version": "0.1.0"}
    create(
        custom,
        namespace,
        helmrelease(
            "t",
            chart,
            {"testExitCode": exit_code},
            test={"enable": True, "ignoreFailures": ignore_failures, "timeout": 60},
        ),
    )
    hr = wait_for_hr(
        custom,
        namespace,
        "t",
        lambda hr: (
            condition(hr, "Tested").get("status") in ("True", "False")
            and hr["status"].get("observedGeneration") == 1
        ),
        operator=operator,
        what="Tested",
    )
    assert condition(hr, "Tested")["status"] == tested
    assert hr["status"]["phase"] == expected_phase
    assert condition(hr, "Ready")["status"] == ready_status


def test_drift_is_corrected_on_resync(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator(resync_interval=2)
    create(custom, namespace, helmrelease("drift", app_chart, {"message": "declared"}))
    wait_for_hr(custom, namespace, "drift", ready, operator=operator)
    release = f"{namespace}-drift"
    core.patch_namespaced_config_map(release, namespace, {"data": {"message": "edited by hand"}})
    core.delete_namespaced_service(release, namespace)

    def corrected() -> bool:
        core.read_namespaced_service(release, namespace)  # 404 until it is back
        return config_map(core, namespace, release)["message"] == "declared"

    eventually(
        corrected,
        60,
        "the edited ConfigMap and the deleted Service to be restored",
        ignoring=(ApiException,),
        context=operator.tail,
    )
    assert "DriftDetected" in {reason for _, reason, _ in events_for(core, namespace, "drift")}


def test_operator_killed_mid_upgrade_recovers(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create(custom, namespace, helmrelease("crash", app_chart, {"message": "v1"}, wait=True, timeout=120))
    wait_for_hr(custom, namespace, "crash", ready, operator=operator)
    release = f"{namespace}-crash"
    # The upgrade waits 8s for the Deployment; kill the operator while helm holds the release in pending-upgrade.
    patch(
        custom,
        namespace,
        "crash",
        {
            "values": {
                "message": "v2",
                "deploymentAnnotations": {"test.helmrelease.dev/ready-after-seconds": "8"},
            }
        },
    )
    eventually(
        lambda: history(helm, namespace, release)[-1]["status"] == "pending-upgrade",
        30,
        "helm to hold the release in pending-upgrade",
        interval=0.1,
        context=operator.tail,
    )
    operator.kill()  # returns once the operator and its helm child are dead: nothing can finish the upgrade
    assert history(helm, namespace, release)[-1]["status"] == "pending-upgrade"
    restarted = start_operator()
    hr = wait_for_hr(
        custom,
        namespace,
        "crash",
        generation_ready(2),
        timeout=120,
        operator=restarted,
        what="Ready at generation 2 after the restart",
    )
    assert hr["status"]["releaseStatus"] == "deployed"
    assert history(helm, namespace, release)[-1]["status"] == "deployed"


KILL_AFTER_UPGRADE = """#!/bin/sh
# helm, except that once {marker} exists, a successful upgrade SIGKILLs the operator (helm's parent) before it
# can read helm's answer: the crash right after helm finished.
"{helm}" "$@"
code=$?
if [ "$1" = upgrade ] && [ "$code" -eq 0 ] && rm "{marker}" 2>/dev/null; then
  kill -9 "$PPID"
fi
exit "$code"
"""


def test_operator_killed_right_after_helm_upgraded_does_not_upgrade_again(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
    tmp_path: Path,
) -> None:
    marker, wrapper = tmp_path / "kill-next-upgrade", tmp_path / "helm"
    wrapper.write_text(KILL_AFTER_UPGRADE.format(helm=binary("helm"), marker=marker))
    wrapper.chmod(0o755)
    operator = start_operator(helm=str(wrapper))
    create(custom, namespace, helmrelease("late", app_chart, {"message": "v1"}))
    wait_for_hr(custom, namespace, "late", ready, operator=operator)
    release = f"{namespace}-late"
    marker.touch()
    patch(custom, namespace, "late", {"values": {"message": "v2"}})
    operator.process.wait_until_exited(timeout=60)
    assert not marker.exists(), "the upgrade ran and the operator was killed after it"
    assert [(e["revision"], e["status"]) for e in history(helm, namespace, release)] == [
        (1, "superseded"),
        (2, "deployed"),
    ]
    assert get_hr(custom, namespace, "late")["status"].get("observedGeneration") == 1, "nothing was recorded"

    restarted = start_operator(helm=str(wrapper))
    hr = wait_for_hr(custom, namespace, "late", generation_ready(2), operator=restarted, what="Ready at 2")
    assert [entry["revision"] for entry in history(helm, namespace, release)] == [1, 2], (
        "no redundant revision"
    )
    assert hr["status"]["helmRevision"] == 2
    assert config_map(core, namespace, release)["message"] == "v2"
    assert "AlreadyApplied" in {reason for _, reason, _ in events_for(core, namespace, "late")}


def test_deleting_a_helmrelease_whose_release_is_gone(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create(custom, namespace, helmrelease("gone", app_chart))
    wait_for_hr(custom, namespace, "gone", ready, operator=operator)
    helm.run("uninstall", f"{namespace}-gone", "--namespace", namespace)
    delete_and_wait_gone(custom, namespace, "gone", timeout=30, operator=operator)


def releases_in(helm: Helm, namespace: str) -> list[str]:
    return sorted(entry["name"] for entry in helm.json("list", "--namespace", namespace))


def test_renaming_the_release_uninstalls_the_old_one(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create(custom, namespace, helmrelease("mv", app_chart, releaseName="before"))
    wait_for_hr(custom, namespace, "mv", ready, operator=operator)
    patch(custom, namespace, "mv", {"releaseName": "after"})
    hr = wait_for_hr(custom, namespace, "mv", generation_ready(2), operator=operator, what="Ready at 2")
    assert releases_in(helm, namespace) == ["after"], "the old release is gone, not forgotten"
    assert (hr["status"]["releaseName"], hr["status"]["releaseNamespace"]) == ("after", namespace)
    assert any(
        reason == "Uninstalled" and f"{namespace}/before" in message and f"{namespace}/after" in message
        for _, reason, message in events_for(core, namespace, "mv")
    ), events_for(core, namespace, "mv")


def test_deleting_a_renamed_helmrelease_uninstalls_the_release_it_made(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    """Renamed while the operator was down, then deleted: the release under the old name is the one to remove."""
    operator = start_operator()
    create(custom, namespace, helmrelease("gone", app_chart, releaseName="first"))
    wait_for_hr(custom, namespace, "gone", ready, operator=operator)
    operator.stop()
    patch(custom, namespace, "gone", {"releaseName": "second"})
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
    restarted = start_operator()
    eventually(
        lambda: all(item["metadata"]["name"] != "gone" for item in list_hrs(custom, namespace)),
        60,
        "the deleted HelmRelease to be finalized by the restarted operator",
        context=restarted.tail,
    )
    assert releases_in(helm, namespace) == []
    assert any(
        reason == "Uninstalled" and f"{namespace}/first" in message
        for _, reason, message in events_for(core, namespace, "gone")
    )


def list_hrs(custom: k8s.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
        "items"
    ]
    return listed


def test_oci_and_git_chart_sources(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    oci_charts: str,
    registry: Any,
) -> None:
    operator = start_operator("--insecure-registry", registry.host)
    create(
        custom, namespace, helmrelease("oci", {"repository": oci_charts, "name": "app", "version": "0.2.0"})
    )
    hr = wait_for_hr(custom, namespace, "oci", ready, operator=operator)
    assert hr["status"]["revision"] == "0.2.0"


# --- bad input: a clear condition and Event, and the operator keeps serving the others ----------------------------


@pytest.mark.parametrize(
    ("spec_changes", "reason", "message_part"),
    [
        pytest.param({"chart": {"name": "nope"}}, "ChartFetchFailed", "nope", id="chart-not-found"),
        pytest.param({"chart": {"version": "9.9.9"}}, "ChartFetchFailed", "9.9.9", id="version-not-found"),
        pytest.param(
            {"chart": {"repository": "http://127.0.0.1:9/"}},
            "ChartFetchFailed",
            "127.0.0.1:9",
            id="repository-unreachable",
        ),
        pytest.param({"values": {"failure": "render"}}, "InstallFailed", "failure=render", id="render-fails"),
        pytest.param({"helmVersion": "v2"}, "UnsupportedHelmVersion", "v2", id="helm-v2"),
        pytest.param({"releaseName": "x" * 60}, "InvalidReleaseName", "53", id="release-name-too-long"),
        pytest.param({"timeout": 0}, "InvalidSpec", "spec.timeout", id="timeout-zero-would-wait-forever"),
        pytest.param({"test": {"timeout": 10**12}}, "InvalidSpec", "spec.test.timeout", id="timeout-absurd"),
        pytest.param(
            {"rollback": {"timeout": 0}}, "InvalidSpec", "spec.rollback.timeout", id="rollback-timeout"
        ),
        pytest.param(
            {"targetNamespace": "does-not-exist"},
            "TargetNamespaceNotFound",
            "does-not-exist",
            id="target-namespace-missing",
        ),
        pytest.param(
            {"valuesFrom": [{"configMapKeyRef": {"name": "missing"}}]},
            "ValuesError",
            "missing",
            id="values-from-missing",
        ),
    ],
)
def test_bad_input_is_reported_and_others_still_reconcile(
    spec_changes: dict[str, Any],
    reason: str,
    message_part: str,
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator()
    chart = {**app_chart, **spec_changes.pop("chart", {})}
    body = helmrelease("bad", chart, spec_changes.pop("values", {}), **spec_changes)
    try:
        create(custom, namespace, body)
    except ApiException as error:  # the CRD's validation may refuse it outright: that is the clearest error
        assert error.status == 422, error
        assert message_part in error.body
        return
    create(custom, namespace, helmrelease("good", app_chart))
    hr = wait_for_hr(
        custom,
        namespace,
        "bad",
        lambda hr: (
            condition(hr, "Ready").get("status") == "False"
            and reason
            in (
                condition(hr, "Ready").get("reason"),
                condition(hr, "Released").get("reason"),
                condition(hr, "ChartFetched").get("reason"),
            )
        ),
        operator=operator,
        what=f"Ready=False with reason {reason}",
    )
    messages = " ".join(str(c.get("message")) for c in hr["status"]["conditions"])
    assert message_part in messages
    # The action's Event follows its status write: wait for it rather than race it.
    eventually(
        lambda: any(
            event_reason == reason and message_part in message
            for _, event_reason, message in events_for(core, namespace, "bad")
        ),
        30,
        f"a {reason} Event naming {message_part!r}",
    )
    wait_for_hr(custom, namespace, "good", ready, operator=operator)
    assert operator.process.running


def test_values_not_a_map(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    create_config_map(core, namespace, "list-values", {"values.yaml": "- a\n- b\n"})
    operator = start_operator()
    create(
        custom,
        namespace,
        helmrelease("notmap", app_chart, valuesFrom=[{"configMapKeyRef": {"name": "list-values"}}]),
    )
    hr = wait_for_condition(custom, namespace, "notmap", "Released", reason="ValuesError", operator=operator)
    assert "map" in condition(hr, "Released")["message"]


def test_release_owned_by_another_helmrelease_is_refused(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    create(custom, namespace, helmrelease("first", app_chart, releaseName="shared"))
    wait_for_hr(custom, namespace, "first", ready, operator=operator)
    create(custom, namespace, helmrelease("second", app_chart, {"message": "mine"}, releaseName="shared"))
    hr = wait_for_condition(custom, namespace, "second", "Released", reason="OwnedByOther", operator=operator)
    assert "first" in condition(hr, "Released")["message"]
    assert [entry["revision"] for entry in history(helm, namespace, "shared")] == [1]
    # Its RELEASESTATUS column shows nothing beside READY False: the release's "deployed" is first's, not its own.
    assert "releaseStatus" not in hr["status"]
    assert get_hr(custom, namespace, "first")["status"]["releaseStatus"] == "deployed"


def test_a_full_quota_is_retried_until_it_is_raised_without_an_edit(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    """A cluster-side failure: the apiserver's quota admission refuses the chart's Service. Nobody edits the
    HelmRelease; raising the quota is enough. (No controller-manager here: the test writes the quota's status.)"""
    quota = k8s.V1ResourceQuota(
        metadata=k8s.V1ObjectMeta(name="services"), spec=k8s.V1ResourceQuotaSpec(hard={"services": "0"})
    )
    core.create_namespaced_resource_quota(namespace, quota)
    core.patch_namespaced_resource_quota_status(
        "services", namespace, {"status": {"hard": {"services": "0"}, "used": {"services": "0"}}}
    )
    operator = start_operator()
    create(custom, namespace, helmrelease("q", app_chart, rollback={"enable": True}))
    hr = wait_for_condition(custom, namespace, "q", "Released", reason="InstallFailed", operator=operator)
    message = condition(hr, "Released")["message"]
    assert "exceeded quota" in message
    assert "the cluster caused this, not the configuration: trying again at " in message
    assert "(attempt 2)" in message
    assert hr["status"]["retryAt"]
    assert hr["status"]["clusterFailures"] == 1

    core.patch_namespaced_resource_quota("services", namespace, {"spec": {"hard": {"services": "5"}}})
    core.patch_namespaced_resource_quota_status(
        "services", namespace, {"status": {"hard": {"services": "5"}}}
    )
    hr = wait_for_hr(custom, namespace, "q", ready, operator=operator, what="Ready without an edit")
    assert hr["metadata"]["generation"] == 1, "nobody edited the HelmRelease"
    assert "retryAt" not in hr["status"]
    statuses = [entry["status"] for entry in history(helm, namespace, f"{namespace}-q")]
    assert statuses[-1] == "deployed"
    assert "pending-rollback" not in statuses, "a cluster-side failure is retried, not rolled back"
    reasons = {reason for _, reason, _ in events_for(core, namespace, "q")}
    assert {"InstallFailed", "UpgradeSucceeded"} <= reasons
    assert "RollbackSucceeded" not in reasons


def test_immutable_field_change_fails_clearly(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    operator = start_operator()
    create(custom, namespace, helmrelease("immut", app_chart))
    wait_for_hr(custom, namespace, "immut", ready, operator=operator)
    # A Deployment's selector is immutable: changing it makes the apiserver reject the upgrade.
    patch(custom, namespace, "immut", {"values": {"selectorLabels": {"tier": "moved"}}})
    hr = wait_for_condition(custom, namespace, "immut", "Released", reason="UpgradeFailed", operator=operator)
    message = condition(hr, "Released")["message"]
    assert "immutable" in message
    assert hr["status"]["releaseStatus"] == "failed"
    # The reason once: "Upgrading <release> to chart 0.1.0 failed: <helm's cause>", no "UpgradeFailed: upgrade: Error:
    # UPGRADE FAILED:" around it, and the Event says the same sentence.
    assert message.startswith(f"Upgrading {namespace}/{namespace}-immut to chart 0.1.0 failed: ")
    assert "UpgradeFailed" not in message
    assert "UPGRADE FAILED" not in message
    assert "upgrade: Error" not in message
    failures = [m for _, reason, m in events_for(core, namespace, "immut") if reason == "UpgradeFailed"]
    assert failures == [message]


def test_deleting_during_a_long_install_cancels_helm_and_uninstalls(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
    helm: Helm,
) -> None:
    operator = start_operator()
    # No readiness annotation: the Deployment never becomes ready, so `--wait` would hold for the whole timeout.
    create(
        custom,
        namespace,
        helmrelease("slow", app_chart, {"deploymentAnnotations": None}, wait=True, timeout=600),
    )
    release = f"{namespace}-slow"
    eventually(
        lambda: helm.json("list", "--namespace", namespace, "--pending"),
        30,
        "the install to be under way (a pending release)",
        context=operator.tail,
    )
    delete_and_wait_gone(custom, namespace, "slow", timeout=60, operator=operator)
    assert helm.run("status", release, "--namespace", namespace, check=False).returncode != 0, (
        "release left behind"
    )
    assert "was cancelled" in operator.log()


def test_more_releases_than_workers_at_startup(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    app_chart: dict[str, str],
) -> None:
    """Objects that exist before the operator starts are indexed before any handler runs; with a kopf worker limit
    below their number that waiting deadlocked (found by bench_resync). 24 objects, 4 helm workers."""
    for index in range(24):
        create(custom, namespace, helmrelease(f"m{index:02d}", app_chart, {"message": str(index)}))
    operator = start_operator()
    eventually(
        lambda: sum(ready(item) for item in list_hrs(custom, namespace)) == 24,
        180,
        "all 24 HelmReleases to be Ready",
        interval=1,
        context=operator.tail,
    )
