"""B4: 1000 HelmReleases installed and watched: operator and sidecar memory, time to Ready, and the B1 ratio.

BENCH_SCALE_RELEASES (default 1000) HelmReleases of the small test chart are created at once and installed by one
operator (4 workers); the image-policy sidecar runs beside it over the same releases. Reported: time to Ready for
all, the operator's RSS at the last Ready, at steady state (SETTLE seconds later) and its peak, the sidecar's RSS
after a full scan cycle, and (unless BENCH_SCALE_BASELINE=0) the same N plain `helm upgrade --install`, 4 at a time,
for the ratio. Targets: RSS <= 150 MiB each (Flux v2's helm-controller peaks at 361 MiB for 1000 HelmReleases).

Both processes run with the environment the chart gives them (`MALLOC_ARENA_MAX=2`; BENCH_SCALE_ARENAS=0 leaves
glibc's default, to compare). Each one's RSS with no HelmRelease yet is its baseline in the same run: what the N
releases add is the difference, per release the slope.
"""

from __future__ import annotations

import os
import sys
import time

from helmrelease.adapters.memory import TRIM_EVERY
from tests.bench.scale import (
    CONCURRENCY,
    bench,
    load_average,
    operator_installs,
    plain_helm_installs,
    rss_kib,
)
from tests.support.procs import Process
from tests.support.wait import eventually

RELEASES = int(os.environ.get("BENCH_SCALE_RELEASES", "1000"))
BASELINE = os.environ.get("BENCH_SCALE_BASELINE", "1") != "0"
TARGET_MIB = 150
#: Seconds after the last Ready at which the operator's steady RSS is read: past one `TRIM_EVERY`.
SETTLE = TRIM_EVERY + 5
#: What the chart's Deployment sets for both containers.
CHART_ENV = {"MALLOC_ARENA_MAX": "2"} if os.environ.get("BENCH_SCALE_ARENAS", "1") != "0" else {}


def main() -> None:
    with bench("bench-scale-") as b:
        namespace = b.namespace("scale")
        plain = plain_helm_installs(b, b.namespace("plain"), RELEASES) if BASELINE else None
        operator = b.operator([namespace], f"--workers={CONCURRENCY}", env=CHART_ENV).start()
        sidecar_log = b.work / "sidecar.log"
        sidecar = Process(
            "image-policy",
            [
                sys.executable,
                "-m",
                "helmrelease",
                "image-policy",
                "--namespace",
                namespace,
                "--interval",
                "20",
                "--health-port",
                "0",
                "--metrics-port",
                "0",
                "--state-dir",
                str(b.work / "sidecar-state"),
            ],
            sidecar_log,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **CHART_ENV),
        )
        sidecar.start()
        try:
            pid = operator.process.popen.pid if operator.process.popen else 0
            sidecar_pid = sidecar.popen.pid if sidecar.popen else 0

            def idle_scan() -> bool:
                return "scan cycle: 0 HelmReleases" in sidecar_log.read_text(errors="replace")

            eventually(idle_scan, 120, "a sidecar scan cycle over no HelmRelease")
            operator_idle, sidecar_idle = rss_kib(pid), rss_kib(sidecar_pid)
            through = operator_installs(b, namespace, RELEASES, operator)
            ready_at, operator_at_ready = time.monotonic(), rss_kib(pid)

            def scanned() -> bool:
                return f"scan cycle: {RELEASES} HelmReleases" in sidecar_log.read_text(errors="replace")

            eventually(scanned, 120, f"a sidecar scan cycle over {RELEASES} HelmReleases")
            sidecar_rss, sidecar_peak = rss_kib(sidecar_pid), rss_kib(sidecar_pid, "VmHWM")
            # Steady state: the last events of the burst handled, and one of the operator's periodic returns of
            # freed memory to the system (adapters.memory) since.
            time.sleep(max(0.0, ready_at + SETTLE - time.monotonic()))
            operator_rss, operator_peak = rss_kib(pid), rss_kib(pid, "VmHWM")
        finally:
            sidecar.stop(timeout=30)
            operator.stop()
    print(f"load average at the end: {load_average()} (2 cores shared with other work)")
    print(f"| {RELEASES} HelmReleases | figure | target |")
    print("|---|---|---|")
    print(f"| time to Ready, operator ({CONCURRENCY} workers) | {through:.0f} s | |")
    if plain is not None:
        print(f"| plain `helm upgrade --install`, {CONCURRENCY} at a time | {plain:.0f} s | |")
        print(f"| B1 ratio at {RELEASES} | {through / plain:.2f} | <= 1.10 |")
    print(f"| malloc arenas | {CHART_ENV.get('MALLOC_ARENA_MAX', 'glibc default')} | |")
    print(
        f"| operator RSS, at the last Ready / steady ({SETTLE:.0f} s later) / peak | {operator_at_ready / 1024:.0f} / "
        f"{operator_rss / 1024:.0f} / {operator_peak / 1024:.0f} MiB | <= {TARGET_MIB} MiB |"
    )
    print(f"| operator RSS with no HelmRelease (baseline) | {operator_idle / 1024:.0f} MiB | |")
    print(f"| operator RSS per HelmRelease | {(operator_rss - operator_idle) / RELEASES:.0f} KiB | |")
    print(
        f"| sidecar RSS, after a scan / peak | {sidecar_rss / 1024:.0f} / {sidecar_peak / 1024:.0f} MiB | <= {TARGET_MIB} MiB |"
    )
    print(f"| sidecar RSS with no HelmRelease (baseline) | {sidecar_idle / 1024:.0f} MiB | |")
    print(f"| sidecar RSS per HelmRelease | {(sidecar_rss - sidecar_idle) / RELEASES:.0f} KiB | |")


if __name__ == "__main__":
    main()
    sys.exit(0)
