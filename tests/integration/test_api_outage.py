"""The Kubernetes API server gone for a few seconds, for the operator only: retried soon, one line, no traceback.

The operator talks to the session's kube-apiserver through a TCP proxy the test cuts (open connections reset, new
ones refused, as in an apiserver restart); the test itself and the node simulator talk to it directly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s
from tests.support.charts import ChartRepository
from tests.support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    StartOperator,
    create_hr,
    helmrelease,
    ready,
)
from tests.support.tcpproxy import TcpProxy
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

RELEASES = 6
#: How the operator says that a call failed because the API server is gone (adapters/kube.py).
UNAVAILABLE = "the Kubernetes API server is unavailable"
#: kopf's line (at DEBUG) for the third attempt of one of its requests: two retries failed.
KOPF_THIRD_ATTEMPT = "Request attempt #3/9 failed; will retry"


def items(custom: k8s.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
        "items"
    ]
    return listed


def log_since(operator: Operator, line: int) -> str:
    return "\n".join(operator.log().splitlines()[line:])


def upgraded(custom: k8s.CustomObjectsApi, namespace: str) -> int:
    return sum(ready(item) and item["metadata"]["generation"] == 2 for item in items(custom, namespace))


def test_a_short_api_outage_is_retried_within_seconds(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    api_client: k8s.ApiClient,
    kubeconfig: Path,
    workdir: Path,
    namespace: str,
    chart_repo: ChartRepository,
) -> None:
    server = urlsplit(api_client.configuration.host)
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 443).start()
    try:
        # At DEBUG, so the log also has what a person does not see at INFO (kopf's later retries).
        proxied = proxy.kubeconfig(kubeconfig, workdir / f"{namespace}-proxied")
        operator = start_operator("--log-level", "DEBUG", through=proxied)
        chart = {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}
        for index in range(RELEASES):
            create_hr(custom, namespace, helmrelease(f"o{index}", chart, {"message": "one"}))
        eventually(
            lambda: sum(ready(item) for item in items(custom, namespace)) == RELEASES,
            120,
            f"all {RELEASES} HelmReleases to be Ready",
            interval=0.5,
            context=operator.tail,
        )
        baseline = len(operator.log().splitlines())

        # Six upgrades that each wait ~3s for their Deployment (the status shows one in progress after 1s): the
        # outage lands in the middle of them, while handlers write status and read objects and helm waits on the
        # API server.
        values = {
            "message": "two",
            "deploymentAnnotations": {"test.helmrelease.dev/ready-after-seconds": "3"},
        }
        for index in range(RELEASES):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, f"o{index}", {"spec": {"values": values, "wait": True}}
            )
        eventually(
            lambda: "Upgrading" in {item.get("status", {}).get("phase") for item in items(custom, namespace)},
            30,
            "an upgrade to be under way",
            interval=0.1,
            context=operator.tail,
        )
        proxy.cut()
        cut = time.monotonic()
        # The outage lasts until the operator has run into it (a failed call of ours, said in one line) and kopf has
        # retried its own requests twice (each after a second), all in vain.
        eventually(
            lambda: (
                UNAVAILABLE in log_since(operator, baseline)
                and KOPF_THIRD_ATTEMPT in log_since(operator, baseline)
            ),
            60,
            "the operator to run into the outage",
            context=operator.tail,
        )
        proxy.restore()
        restored = time.monotonic()
        eventually(
            lambda: upgraded(custom, namespace) == RELEASES,
            90,
            f"all {RELEASES} upgrades to finish after the outage",
            context=lambda: operator.tail(120),
        )
        converged = time.monotonic() - restored
        during = log_since(operator, baseline)
    finally:
        proxy.stop()

    print(f"\n{RELEASES} releases converged {converged:.1f}s after a {restored - cut:.1f}s API outage")
    assert "Traceback" not in during, during
    assert "failed with an exception" not in during, during
    # What a person reads at INFO: one line per failed request. None per retry of the kubernetes client's transport
    # ("Retrying (...)"); kopf's retries of a request of its own are one WARNING, the later attempts DEBUG.
    shown = "\n".join(line for line in during.splitlines() if " DEBUG " not in line)
    assert "urllib3" not in shown, shown
    assert not re.search(r" ERROR .*Request attempt #\d+/\d+ failed; will retry", shown), shown
    assert not re.search(r"Request attempt #[2-9]", shown), shown
    assert re.search(r" WARNING .*Request attempt #1/9 failed; will retry", shown), shown
    # kopf's own retry of an unexpected error is 60s (and six releases took 49s before); ours is 5s after a
    # failed API call or the first cluster-side backoff (10s) after a helm process lost the server.
    assert converged < 30, during
