"""Plays the node's part for helm test Pods, since the local control plane has no kubelet.

Only Pods annotated as Helm test hooks, in namespaces labelled `helmrelease-test`, are touched: each is moved to
`Succeeded` or `Failed` according to the exit code its command asks for (`sh -c "exit N"`). Everything else in the
tests (Deployments, Services, ConfigMaps, CRDs, release Secrets) is stored and validated by the real apiserver.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.rest import ApiException

_EXIT = re.compile(r"exit\s+(\d+)")


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
        self._thread: threading.Thread | None = None
        self.completed: list[tuple[str, str, str]] = []

    def start(self) -> NodeSimulator:
        self._thread = threading.Thread(target=self._run, name="nodesim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

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
        with contextlib.suppress(ApiException):
            labels = self.core.read_namespace(namespace).metadata.labels or {}
            if labels.get("helmrelease-test") != "1":
                return
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
