"""Plays the node's and the controller-manager's part where tests need it, since the control plane has neither.

Only objects in namespaces labelled `helmrelease-test` are touched:
- Pods annotated as Helm test hooks move to `Succeeded` or `Failed` by the exit code their command asks for
  (`sh -c "exit N"`).
- Deployments annotated `test.helmrelease.dev/ready-after-seconds: "N"` report all replicas available N seconds after
  each change of their spec (what the Deployment controller and kubelets would report), so `helm --wait` can succeed.
  Deployments without it never become ready, as on a cluster with no nodes.
Everything else (Services, ConfigMaps, CRDs, release Secrets) is stored and validated by the real apiserver.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

_EXIT = re.compile(r"exit\s+(\d+)")
READY_AFTER = "test.helmrelease.dev/ready-after-seconds"


def exit_code(pod: k8s.V1Pod) -> int:
    """The exit code the test pod's first container asks for; 0 if it asks for none."""
    container = pod.spec.containers[0]
    words = " ".join([*(container.command or []), *(container.args or [])])
    match = _EXIT.search(words)
    return int(match.group(1)) if match else 0


class NodeSimulator:
    """A background watch that completes helm test Pods; start() and stop() are idempotent."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.completed: list[tuple[str, str, str]] = []

    def start(self) -> NodeSimulator:
        self._threads = [
            threading.Thread(target=self._run, name="nodesim-pods", daemon=True),
            threading.Thread(target=self._run_deployments, name="nodesim-deployments", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _test_namespace(self, namespace: str) -> bool:
        with contextlib.suppress(ApiException):
            labels = self.core.read_namespace(namespace).metadata.labels or {}
            return labels.get("helmrelease-test") == "1"
        return False

    def _run_deployments(self) -> None:
        apps = k8s.AppsV1Api(self.core.api_client)
        while not self._stop.is_set():
            stream = watch.Watch()
            with contextlib.suppress(Exception):
                for event in stream.stream(
                    apps.list_deployment_for_all_namespaces, timeout_seconds=2, _request_timeout=5
                ):
                    if self._stop.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._maybe_ready(apps, event["object"])
            stream.stop()

    def _maybe_ready(self, apps: k8s.AppsV1Api, deployment: k8s.V1Deployment) -> None:
        delay = (deployment.metadata.annotations or {}).get(READY_AFTER)
        status = deployment.status
        if delay is None or (status and status.observed_generation == deployment.metadata.generation):
            return
        if not self._test_namespace(deployment.metadata.namespace):
            return
        timer = threading.Timer(float(delay), self._mark_ready, (apps, deployment))
        timer.daemon = True
        timer.start()

    def _mark_ready(self, apps: k8s.AppsV1Api, deployment: k8s.V1Deployment) -> None:
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        now = dt.datetime.now(dt.UTC).isoformat()
        status = {
            "observedGeneration": deployment.metadata.generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                },
            ],
        }
        if self._stop.is_set():
            return
        with contextlib.suppress(Exception):  # the control plane may be gone at teardown
            apps.patch_namespaced_deployment_status(
                deployment.metadata.name, deployment.metadata.namespace, {"status": status}
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            with contextlib.suppress(Exception):
                for event in stream.stream(
                    self.core.list_pod_for_all_namespaces, timeout_seconds=2, _request_timeout=5
                ):
                    if self._stop.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._complete(event["object"])
            stream.stop()

    def _complete(self, pod: k8s.V1Pod) -> None:
        annotations = pod.metadata.annotations or {}
        if "test" not in annotations.get("helm.sh/hook", "").split(","):
            return
        if pod.status and pod.status.phase in ("Succeeded", "Failed"):
            return
        namespace = pod.metadata.namespace
        if not self._test_namespace(namespace):
            return
        with contextlib.suppress(ApiException):
            code = exit_code(pod)
            now = dt.datetime.now(dt.UTC)
            container = pod.spec.containers[0].name
            status = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "startTime": now.isoformat(),
                "containerStatuses": [
                    {
                        "name": container,
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "startedAt": now.isoformat(),
                                "finishedAt": now.isoformat(),
                            }
                        },
                    }
                ],
            }
            self.core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": status})
            self.completed.append((namespace, pod.metadata.name, status["phase"]))
