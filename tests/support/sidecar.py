"""The image-policy sidecar as a real process with its webhooks on, and what a test reads from it.

Its Prometheus metrics (``/metrics``) and its log are the facts tests wait for: a webhook request counted as
refused is the proof the refused push had its chance; a ``scan cycle:`` line is a poll.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import REPO_ROOT, Process, free_port, tail


def finished_cycles(process: Process) -> int:
    """Scan cycles a sidecar process has finished so far (each logs one `scan cycle: ` line)."""
    return process.log_path.read_text(errors="replace").count("scan cycle: ")


def wait_for_cycles(process: Process, more: int, timeout: float = 60) -> None:
    """Wait until `more` cycles have finished after now: each had its chance to act (move, post) again."""
    target = finished_cycles(process) + more
    process.wait_until(
        lambda: finished_cycles(process) >= target, timeout, f"through {more} more scan cycles"
    )


def environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "operator"), env.get("PYTHONPATH")]))
    return env


@dataclass
class Sidecar:
    """A running ``helmrelease image-policy --webhook-port``."""

    process: Process
    webhook_port: int
    metrics_port: int
    token: str | None

    def hook_url(self, sender: str) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/hooks/{sender}"

    def metric(self, name: str, **labels: str) -> float:
        """The value of sample ``name`` with exactly ``labels`` (0 when absent)."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def serving(self) -> bool:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).status_code == 200

    def requests_counted(self, receiver: str, outcome: str) -> float:
        return self.metric("helmrelease_webhook_requests_total", receiver=receiver, outcome=outcome)

    def rescans(self) -> float:
        return self.metric("helmrelease_webhook_rescans_total")

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def cycles(self) -> int:
        """Polling cycles finished so far."""
        return finished_cycles(self.process)

    def tail(self) -> str:
        return tail(self.process.log_path)

    def stop(self) -> None:
        self.process.stop()


def start(
    workdir: Path,
    kubeconfig: Path,
    namespace: str,
    insecure_hosts: list[str],
    *,
    token: str | None,
    interval: float = 3600,
    settle: float = 0.2,
    webhook_port: int | None = None,
    extra: tuple[str, ...] = (),
) -> Sidecar:
    """Start the sidecar scoped to ``namespace``; returns once it serves metrics and its first poll is done.

    Without ``token`` the webhooks are off (a polling-only sidecar)."""
    workdir.mkdir(parents=True, exist_ok=True)
    webhook_port = webhook_port or free_port()
    metrics_port = free_port()
    hooks: list[str] = []
    if token is not None:
        token_file = workdir / f"webhook-token-{webhook_port}"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        hooks = [
            "--webhook-port",
            str(webhook_port),
            "--webhook-token-file",
            str(token_file),
            "--webhook-settle",
            f"{settle:g}",
        ]
    args = [
        sys.executable,
        "-m",
        "helmrelease",
        "image-policy",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        *(flag for host in insecure_hosts for flag in ("--insecure-registry", host)),
        "--interval",
        f"{interval:g}",
        "--health-port",
        "0",
        "--metrics-port",
        str(metrics_port),
        *hooks,
        *extra,
    ]
    log = workdir / f"sidecar-{webhook_port}.log"
    process = Process("sidecar", args, log, env=environment()).start()
    sidecar = Sidecar(process, webhook_port, metrics_port, token)
    process.wait_until(lambda: sidecar.cycles() >= 1 and sidecar.serving(), 60, "through its first poll")
    return sidecar
