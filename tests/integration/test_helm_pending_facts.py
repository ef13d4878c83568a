"""What Helm itself leaves behind when a process running `helm upgrade` dies, with the real v4 and v3 binaries.

The unlock (`StaleLock`) and the claims across replicas (reconcile/claims.py) rest on these facts, so they are
measured, not assumed: Helm marks the revision it is making `pending-upgrade` in its storage Secret, with a
`modifiedAt` label (seconds since the epoch) that says when; a killed helm leaves that mark; `helm rollback`
recovers the release but leaves the abandoned revision marked `pending-upgrade` in the history, next to the
rollback revision that is `deployed`.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes import client as k8s
from tests.conftest import REPO_ROOT
from tests.support.helmtool import Helm
from tests.support.wait import eventually

pytestmark = pytest.mark.usefixtures("node_simulator")

CHART = REPO_ROOT / "tests" / "charts" / "app"


def storage(core: k8s.CoreV1Api, namespace: str, release: str) -> dict[int, dict[str, str]]:
    """The labels of the release's storage Secrets by revision."""
    secrets = core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    return {int(secret.metadata.labels["version"]): dict(secret.metadata.labels) for secret in secrets}


@pytest.mark.parametrize("major", ["v4", "v3"])
def test_a_killed_upgrade_leaves_its_revision_pending_and_a_rollback_leaves_it_so(
    helm: Helm, helm3: Helm, core: k8s.CoreV1Api, namespace: str, major: str
) -> None:
    binary = helm if major == "v4" else helm3
    release = f"facts-{major}"
    binary.run("install", release, str(CHART), "--namespace", namespace)
    started = time.time()
    # A Deployment the node simulator reports ready only after ten minutes (and that helm v3, which waits for
    # ReplicaSets no controller makes here, never sees ready): `--wait` holds the upgrade.
    upgrade = subprocess.Popen(
        [
            binary.executable,
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "600s",
            "--set",
            "replicas=2",
            "--set-string",
            "deploymentAnnotations.test\\.helmrelease\\.dev/ready-after-seconds=600",
        ],
        env=binary.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(
            lambda: storage(core, namespace, release).get(2, {}).get("status") == "pending-upgrade",
            120,
            "revision 2 to be pending-upgrade",
            context=lambda: f"upgrade exit {upgrade.poll()}; storage {storage(core, namespace, release)}",
        )
        labels = storage(core, namespace, release)[2]
        assert "modifiedAt" in labels, labels
        assert started - 5 <= int(labels["modifiedAt"]) <= time.time() + 5, (started, labels)
    finally:
        upgrade.kill()
        upgrade.wait()
    assert storage(core, namespace, release)[2]["status"] == "pending-upgrade", "the kill leaves the mark"

    binary.run("rollback", release, "--namespace", namespace, "--timeout", "120s")
    history = [
        (entry["revision"], entry["status"])
        for entry in binary.json("history", release, "--namespace", namespace)
    ]
    assert history == [(1, "superseded"), (2, "pending-upgrade"), (3, "deployed")], history
    assert binary.json("status", release, "--namespace", namespace)["info"]["status"] == "deployed"
    # Not locked: the next upgrade runs.
    binary.run("upgrade", release, str(CHART), "--namespace", namespace)
    assert storage(core, namespace, release)[4]["status"] == "deployed"
