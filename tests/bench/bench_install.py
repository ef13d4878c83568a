"""B1: fresh HelmReleases to Ready through the operator against the same `helm upgrade --install`s, in one run.

For each N (BENCH_INSTALL_SIZES, default 50,200): N plain `helm upgrade --install` of the small test chart, 4 at a
time, then N HelmReleases of it created at once and waited for Ready through one operator with 4 workers (its first
install fetches the chart once; after that both install from disk). Same control plane, same chart, same values
(wait: false, as helm's default). Target: operator / helm <= 1.10 at every N, and not growing with N.
"""

from __future__ import annotations

import os
import sys

from tests.bench.scale import (
    CONCURRENCY,
    bench,
    cpu_seconds,
    load_average,
    operator_installs,
    plain_helm_installs,
    profiled,
)

SIZES = [int(size) for size in os.environ.get("BENCH_INSTALL_SIZES", "50,200").split(",")]
TARGET = 1.10


def main() -> None:
    with bench("bench-install-") as b:
        namespaces = {size: (b.namespace(f"plain-{size}"), b.namespace(f"op-{size}")) for size in SIZES}
        operator = b.operator([ns for _, ns in namespaces.values()], f"--workers={CONCURRENCY}").start()
        pid = operator.process.popen.pid if operator.process.popen else 0
        rows = []
        try:
            for size, (plain_ns, op_ns) in namespaces.items():
                plain = plain_helm_installs(b, plain_ns, size)
                cpu = cpu_seconds(pid)
                with profiled(pid, f"install-{size}"):
                    through = operator_installs(b, op_ns, size, operator)
                rows.append((size, plain, through, cpu_seconds(pid) - cpu))
        finally:
            operator.stop()
    print(f"load average at the end: {load_average()} (2 cores shared with other work: compare ratios)")
    print("| releases | plain `helm upgrade --install` | through the operator | ratio | operator CPU |")
    print("|---|---|---|---|---|")
    for size, plain, through, cpu in rows:
        mark = "" if through / plain <= TARGET else f" (target {TARGET})"
        print(f"| {size} | {plain:.1f} s | {through:.1f} s | {through / plain:.2f}{mark} | {cpu:.1f} s |")


if __name__ == "__main__":
    main()
    sys.exit(0)
