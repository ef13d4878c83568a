"""Run the real operator (`helmrelease run`) as a subprocess, and wait on what it writes.

A subprocess, not an in-process runner: the tests SIGKILL it mid-upgrade, read its logs as a user would, and it
runs the same entry point users run.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from helmrelease.api.constants import GROUP, PLURAL, VERSION
from tests.support.procs import Process, binary, free_port, tail
from tests.support.wait import eventually

#: What the `start_operator` fixture gives a test: start(*extra_args, helm=, resync_interval=, namespaces=,
#: through=).
StartOperator = Callable[..., "Operator"]
READY_LINE = "helmrelease operator ready"


class Operator:
    """One operator process watching the given namespaces."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        namespaces: list[str],
        *,
        helm: str = "helm",
        resync_interval: float = 300,
        extra_args: tuple[str, ...] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"operator-{int(time.time() * 1000)}.log"
        #: Where its /metrics is served: a free loopback port, unless the test chose (`--metrics-port` given).
        self.metrics_port: int | None = None
        if not any(arg.startswith("--metrics-port") for arg in extra_args):
            self.metrics_port = free_port()
            extra_args = ("--metrics-port", str(self.metrics_port), *extra_args)
        args = [
            sys.executable,
            "-m",
            "helmrelease",
            "run",
            "--helm",
            binary(helm),
            "--state-dir",
            str(workdir / "state"),
            "--resync-interval",
            str(resync_interval),
            "--log-level",
            "DEBUG" if os.environ.get("HELMRELEASE_TEST_DEBUG") else "INFO",
            *[arg for ns in namespaces for arg in ("--namespace", ns)],
            *extra_args,
        ]
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1", **(extra_env or {}))
        self.process = Process("operator", args, self.log_path, env=env)

    def start(self, timeout: float = 60) -> Operator:
        self.process.start()
        self.process.wait_until(lambda: READY_LINE in self.log(), timeout, "ready")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def scrape(self) -> str:
        """The operator's /metrics, as Prometheus reads it."""
        if self.metrics_port is None:
            raise RuntimeError("this operator was started with its own --metrics-port")
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        self.process.stop(timeout=30)

    def kill(self) -> None:
        self.process.kill()


def helmrelease(
    name: str,
    chart: Mapping[str, Any],
    values: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HelmRelease",
        "metadata": {"name": name},
        "spec": {"chart": dict(chart), "values": dict(values or {}), **spec},
    }


def get_hr(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return obj


def find_hr(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    """The HelmRelease, or None while (or once) the API has none of that name."""
    try:
        return get_hr(custom, namespace, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def condition(hr: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for entry in (hr.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return entry  # type: ignore[no-any-return]
    return {}


def wait_for_hr(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 90,
    operator: Operator | None = None,
    what: str = "the expected status",
) -> dict[str, Any]:
    """Wait until `predicate(hr)`; on timeout show its status and the operator log tail. A 404 is "not yet"."""
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        hr = find_hr(custom, namespace, name)
        if hr is None:
            seen["status"] = "(no such HelmRelease yet)"
            return None
        seen["status"] = hr.get("status")
        return hr if predicate(hr) else None

    def context() -> str:
        return f"status: {seen.get('status')}\n{operator.tail() if operator else ''}"

    return eventually(probe, timeout, f"HelmRelease {namespace}/{name} to reach {what}", context=context)


def wait_for_condition(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    kind: str,
    *,
    status: str | None = None,
    reason: str | None = None,
    operator: Operator | None = None,
    timeout: float = 90,
) -> dict[str, Any]:
    """Wait until condition `kind` has the given status and/or reason; returns the HelmRelease."""
    wanted = {key: value for key, value in (("status", status), ("reason", reason)) if value is not None}

    def holds(hr: dict[str, Any]) -> bool:
        found = condition(hr, kind)
        return all(found.get(key) == value for key, value in wanted.items())

    what = f"{kind} " + ", ".join(f"{key}={value}" for key, value in wanted.items())
    return wait_for_hr(custom, namespace, name, holds, timeout=timeout, operator=operator, what=what)


def wait_for_resyncs(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    count: int,
    *,
    operator: Operator,
    timeout: float = 60,
) -> None:
    """Wait until `count` more resyncs have looked at the release: `status.lastDriftCheck` moved `count` times.

    The operator stamps it on every resync pass that compares the release with the cluster (drift detection on, the
    release ours, deployed and unchanged), so it is the fact to wait for before asserting that a resync did nothing.
    A resync of an object starts only after the one before it ended, and a stamp seen moving was written after this
    call began: all but the first of the `count` passes started after it, and saw whatever the test did before.
    """
    stamps = [(get_hr(custom, namespace, name).get("status") or {}).get("lastDriftCheck")]

    def moved() -> bool:
        stamp = (get_hr(custom, namespace, name).get("status") or {}).get("lastDriftCheck")
        if stamp != stamps[-1]:
            stamps.append(stamp)
        return len(stamps) > count

    eventually(
        moved,
        timeout,
        f"{count} resyncs of HelmRelease {namespace}/{name} (status.lastDriftCheck to move {count} times)",
        context=lambda: f"stamps seen: {stamps}\n{operator.tail()}",
    )


def ready(hr: Mapping[str, Any]) -> bool:
    generation = (hr.get("metadata") or {}).get("generation")
    status = hr.get("status") or {}
    return condition(hr, "Ready").get("status") == "True" and status.get("observedGeneration") == generation


def events_for(core: k8s.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events posted on a HelmRelease, oldest first."""
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    items.sort(key=lambda e: (e.first_timestamp or e.event_time or 0, e.metadata.name))
    return [(e.type, e.reason, e.message) for e in items]


def delete_and_wait_gone(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    *,
    timeout: float = 60,
    operator: Operator | None = None,
) -> float:
    """Delete a HelmRelease and wait until the API no longer has it (our finalizer released); returns seconds."""
    started = time.monotonic()
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    eventually(
        lambda: find_hr(custom, namespace, name) is None,
        timeout,
        f"HelmRelease {namespace}/{name} to be gone (finalizer released)",
        context=operator.tail if operator else None,
    )
    return time.monotonic() - started


def create_hr(custom: k8s.CustomObjectsApi, namespace: str, body: Mapping[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(body))


def create_config_map(core: k8s.CoreV1Api, namespace: str, name: str, data: Mapping[str, str]) -> None:
    core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name), data=dict(data))
    )


def create_secret(core: k8s.CoreV1Api, namespace: str, name: str, data: Mapping[str, str]) -> None:
    core.create_namespaced_secret(
        namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data=dict(data))
    )


def request_passes(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    count: int,
    *,
    operator: Operator,
    timeout: float = 90,
) -> None:
    """Ask for `count` passes one after the other (``reconcile.fluxcd.io/requestedAt``, as ``helmrelease
    reconcile`` does) and wait until each is done (``status.lastHandledReconcileAt`` echoes it, failed or not): a
    retry on demand, so a test proves "told once" without waiting out a retry delay. After a failed pass kopf holds
    the next one back for the failure's retry delay (2 minutes for a chart fetch), so ask for one after a failure."""
    for _ in range(count):
        token = f"pass-{time.time_ns()}"
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}},
        )
        wait_for_hr(
            custom,
            namespace,
            name,
            lambda hr, token=token: (hr.get("status") or {}).get("lastHandledReconcileAt") == token,  # type: ignore[misc]
            operator=operator,
            timeout=timeout,
            what=f"the requested pass {token} done",
        )
