"""Cost of the operator's per-HelmRelease metrics: one watch event, one scrape, and the event loop meanwhile.

For N HelmReleases with five conditions each, reports the cost of `OperatorMetrics.observe` per watch event, the
time and size of one /metrics scrape served by the real `HttpServer`, its ratio to prometheus_client formatting the
same number of samples of a plain labelled Gauge (the floor: measured in the same run), and the longest the event
loop went without running a 10 ms ticker during the scrape (the scrape runs in a thread, so this stays far below
the scrape's own time).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from helmrelease.adapters.http_server import METRICS_PATH, HttpServer, metrics_route
from helmrelease.api.constants import ConditionType
from helmrelease.reconcile.metrics import OperatorMetrics
from tests.support.procs import free_port

SIZES = (500, 5000)
CONDITIONS = [
    {"type": kind.value, "status": "True"} for kind in ConditionType if kind is not ConditionType.ROLLED_BACK
]


def body(index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"release-{index:05d}", "namespace": f"team-{index % 50:02d}"},
        "spec": {
            "chart": {"repository": "https://charts.example/", "name": "app", "version": "1.2.3"},
            "values": {"replicas": 2, "image": {"repository": "example/app", "tag": "1.0.0"}},
        },
        "status": {"revision": "1.2.3", "conditions": CONDITIONS},
    }


def baseline_seconds(samples: int) -> float:
    registry = CollectorRegistry()
    gauge = Gauge("plain", "floor", ["namespace", "name", "type", "status"], registry=registry)
    for index in range(samples):
        gauge.labels("team", f"release-{index:06d}", "Ready", "True").set(1)
    started = time.perf_counter()
    generate_latest(registry)
    return time.perf_counter() - started


async def scrape_with_ticker(port: int) -> tuple[float, int, float]:
    """(scrape seconds, bytes, longest gap between ticks of the loop)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last - 0.01)
            last = now

    def fetch() -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{METRICS_PATH}", timeout=60) as response:
            return bytes(response.read())

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    payload = await asyncio.to_thread(fetch)
    seconds = time.perf_counter() - started
    done.set()
    await task
    return seconds, len(payload), max(gaps, default=0.0)


async def measure(size: int) -> str:
    registry = CollectorRegistry()
    metrics = OperatorMetrics.create(registry)
    bodies = [body(index) for index in range(size)]
    started = time.perf_counter()
    for item in bodies:
        metrics.observe(item, default_git_ref="master")
    observe_us = (time.perf_counter() - started) / size * 1e6
    port = free_port()
    server = HttpServer({port: {METRICS_PATH: metrics_route(registry)}}, host="127.0.0.1")
    await server.start()
    try:
        seconds, size_bytes, stall = await scrape_with_ticker(port)
    finally:
        await server.stop()
    samples = size * (len(CONDITIONS) * 3 + 1)
    floor = baseline_seconds(samples)
    return (
        f"| {size} | {samples} | {observe_us:.0f} us | {seconds:.2f} s | {size_bytes / 1e6:.1f} MB "
        f"| {seconds / floor:.2f}x | {stall * 1000:.0f} ms |"
    )


def main() -> None:
    print(
        "| HelmReleases | samples | observe per event | scrape | size | scrape / plain gauge | longest loop stall |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in SIZES:
        print(asyncio.run(measure(size)), flush=True)


if __name__ == "__main__":
    main()
