"""The two processes together, as they run in one Pod: a newer image tag in the registry moves the HelmRelease's
values (the sidecar), and the reconciler then upgrades the release so its Deployment runs the new image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s
from tests.support.charts import ChartRepository
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    events_for,
    get_hr,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.registry import ImagePusher, Registry, utc
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")


def test_new_tag_reaches_the_deployment(
    workdir: Path,
    kubeconfig: Path,
    namespace: str,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    api_client: k8s.ApiClient,
    chart_repo: ChartRepository,
    registry: Registry,
    pusher: ImagePusher,
) -> None:
    repository = f"e2e/{namespace}"
    for age, tag in ((30, "1.0.0"), (20, "1.0.1")):
        pusher.push(repository, tag, created=utc(age))
    image = f"{registry.host}/{repository}"
    body = helmrelease(
        "web",
        {"repository": chart_repo.url, "name": "app", "version": "0.1.0"},
        {"image": {"repository": image, "tag": "1.0.0"}},
    )
    body["metadata"]["annotations"] = {
        "fluxcd.io/automated": "true",
        "fluxcd.io/tag.chart-image": "semver:~1.0",
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    operator = Operator(workdir / namespace, kubeconfig, [namespace]).start()
    sidecar = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "helmrelease",
            "image-policy",
            "--interval",
            "2",
            "--namespace",
            namespace,
            "--insecure-registry",
            registry.host,
            "--kubeconfig",
            str(kubeconfig),
            "--health-port",
            "0",
            "--metrics-port",
            "0",
        ],
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    apps = k8s.AppsV1Api(api_client)
    release = f"{namespace}-web"

    def deployed_image() -> str:
        deployment = apps.read_namespaced_deployment(release, namespace)
        return str(deployment.spec.template.spec.containers[0].image)

    try:
        wait_for_hr(
            custom,
            namespace,
            "web",
            lambda hr: ready(hr) and hr["spec"]["values"]["image"]["tag"] == "1.0.1",
            operator=operator,
            what="tag 1.0.1 deployed",
        )
        eventually(
            lambda: deployed_image() == f"{image}:1.0.1",
            60,
            "the Deployment to run 1.0.1",
            context=operator.tail,
        )
        # A newer patch release appears: one more cycle, one more upgrade.
        pusher.push(repository, "1.0.2", created=utc(0))
        pusher.push(repository, "1.1.0", created=utc(0))  # outside semver:~1.0, never chosen
        eventually(
            lambda: deployed_image() == f"{image}:1.0.2",
            60,
            "the Deployment to run 1.0.2",
            context=operator.tail,
        )
        hr = get_hr(custom, namespace, "web")
        assert hr["spec"]["values"]["image"] == {"repository": image, "tag": "1.0.2"}
        reasons = [reason for _, reason, _ in events_for(core, namespace, "web")]
        assert reasons.count("ImageUpdated") == 2
        # The first move may land before the first install (both processes start together); the second cannot.
        assert reasons.count("InstallSucceeded") + reasons.count("UpgradeSucceeded") in (2, 3)
        assert "UpgradeSucceeded" in reasons
    finally:
        sidecar.terminate()
        output, _ = sidecar.communicate(timeout=30)
        operator.stop()
    assert sidecar.returncode == 0, output
