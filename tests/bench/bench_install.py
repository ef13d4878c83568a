"""B1: fresh HelmReleases to Ready through the operator against the same `helm upgrade --install`s, in one run.

For each N (BENCH_INSTALL_SIZES, default 50,200): N plain `helm upgrade --install` of the small test chart, 4 at a
time, then N HelmReleases of it created at once and waited for Ready through one operator with 4 workers (its first
install fetches the chart once; after that both install from disk), then the N plain installs once more into another
namespace. The baseline is the mean of the two plain runs that bracket the operator's: on a machine shared with other
work the load drifts, and a baseline measured only before would charge that drift to the operator. Same control
plane, same chart, same values (wait: false, as helm's default). Target: operator / helm <= 1.10 at every N, and
not growing with N.
"""

from __future__ import annotations

import os
import sys
import time

from tests.bench.scale import (
    CONCURRENCY,
    api_requests,
    bench,
    control_plane_cpu,
    cpu_seconds,
    helm_times,
    load_average,
    operator_installs,
    per_release,
    plain_helm_installs,
    profiled,
)

SIZES = [int(size) for size in os.environ.get("BENCH_INSTALL_SIZES", "50,200").split(",")]
TARGET = 1.10


def main() -> None:
    with bench("bench-install-") as b:
        namespaces = {size: (b.namespace(f"plain-{size}"), b.namespace(f"op-{size}")) for size in SIZES}
        again = {size: b.namespace(f"plain-{size}-after") for size in SIZES}
        operator = b.operator([ns for _, ns in namespaces.values()], f"--workers={CONCURRENCY}").start()
        pid = operator.process.popen.pid if operator.process.popen else 0
        rows = []
        calls = []
        brackets = []
        try:
            for size, (plain_ns, op_ns) in namespaces.items():
                t0 = time.time()
                plane_cpu, requests = control_plane_cpu(b), api_requests(b)
                plain = plain_helm_installs(b, plain_ns, size)
                t1 = time.time()
                plane_plain = control_plane_cpu(b) - plane_cpu
                requests_plain = api_requests(b)
                cpu, plane_cpu = cpu_seconds(pid), control_plane_cpu(b)
                with profiled(pid, f"install-{size}"):
                    through = operator_installs(b, op_ns, size, operator)
                t2 = time.time()
                cpu, plane_through = cpu_seconds(pid) - cpu, control_plane_cpu(b) - plane_cpu
                requests_through = api_requests(b)
                plain_after = plain_helm_installs(b, again[size], size)
                brackets.append((size, plain, plain_after))
                plain = (plain + plain_after) / 2
                calls.append(
                    (
                        size,
                        per_release(requests, requests_plain, size),
                        per_release(requests_plain, requests_through, size),
                    )
                )
                rows.append(
                    (
                        size,
                        plain,
                        through,
                        cpu,
                        helm_times(b.helm_log, t0, t1),
                        helm_times(b.helm_log, t1, t2),
                        plane_plain,
                        plane_through,
                    )
                )
        finally:
            operator.stop()
    print(f"load average at the end: {load_average()} (2 cores shared with other work: compare ratios)")
    print(
        "| releases | plain `helm upgrade --install` | through the operator | ratio | operator CPU "
        "| helm runs (operator) | mean helm run, plain / operator | helm at once, plain / operator "
        "| apiserver + etcd CPU, plain / operator |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, plain, through, cpu, plain_helm, op_helm, plane_plain, plane_through in rows:
        mark = "" if through / plain <= TARGET else f" (target {TARGET})"
        print(
            f"| {size} | {plain:.1f} s | {through:.1f} s | {through / plain:.2f}{mark} | {cpu:.1f} s "
            f"| {op_helm.runs} {op_helm.commands} | {plain_helm.mean:.2f} / {op_helm.mean:.2f} s "
            f"| {plain_helm.concurrency:.1f} / {op_helm.concurrency:.1f} "
            f"| {plane_plain:.1f} / {plane_through:.1f} s |"
        )
    for size, before, after in brackets:
        print(f"plain helm at N={size}: {before:.1f} s before the operator's run, {after:.1f} s after it")
    for size, plain_calls, operator_calls in calls:
        print(f"API requests per release at N={size}, plain helm: {plain_calls}")
        print(
            f"API requests per release at N={size}, through the operator (helm's included): {operator_calls}"
        )


if __name__ == "__main__":
    main()
    sys.exit(0)
