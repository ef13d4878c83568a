"""What a periodic resync of unchanged releases costs the operator, against what plain helm would spend on it.

Setup: a control plane, a chart repository, N HelmReleases installed by the operator. Then one resync pass over all
of them (drift detection on) is timed, and the helm processes the operator started during it are counted through a
wrapper script. The baseline is what a naive reconciler spawns per release on every resync: `helm status`, and Flux
v1's habit, a dry-run `helm upgrade`, run by plain helm on the same releases in the same run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client.parser import text_string_to_metric_families

from tests.bench.scale import Watched, cpu_seconds, profiled, wait_all
from tests.support import charts, controlplane
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.operator import GROUP, PLURAL, VERSION, Operator, helmrelease, ready
from tests.support.procs import REPO_ROOT, binary

RELEASES = int(os.environ.get("BENCH_RELEASES", "200"))
#: B2: operator CPU for one resync pass over 200 unchanged releases with drift checks (issue "Scale").
TARGET_CPU_SECONDS = 2.0 * RELEASES / 200
#: Seconds between resyncs in the benchmark (the default is 300; jitter adds up to 10%).
RESYNC = float(os.environ.get("BENCH_RESYNC", "30"))
NAMESPACE = "bench"


def _helm_counter(directory: Path) -> tuple[Path, Path]:
    """A `helm` that appends its arguments to a log before running the real one."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "helm-calls.log"
    wrapper = directory / "helm"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {binary("helm")} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _passes(operator: Operator) -> int:
    """Reconcile passes the operator has finished so far, whatever their result (its /metrics)."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(operator.scrape())
            for sample in family.samples
            if sample.name == "helmrelease_reconcile_duration_seconds_count"
        )
    )


def _process_tree_rss(pid: int) -> int:
    from tests.support.procs import descendants

    return sum(_rss_kib(p) for p in [pid, *descendants(pid)] if Path(f"/proc/{p}").exists())


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-resync-"))
    plane = controlplane.start(work / "controlplane")
    repo = None
    operator: Operator | None = None
    try:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        helm = Helm.create("helm", work / "helm", plane.kubeconfig)
        repo = charts.serve_repository(helm, work / "charts")
        kubectl(
            plane.kubeconfig, "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "helmrelease.yaml")
        )
        kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "crd/helmreleases.helm.fluxcd.io")
        kubectl(plane.kubeconfig, "create", "namespace", NAMESPACE)
        api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
        custom = k8s.CustomObjectsApi(api)
        wrapper, calls_log = _helm_counter(work / "counting-helm")
        chart = {"repository": repo.url, "name": "app", "version": "0.1.0"}

        operator = Operator(work, plane.kubeconfig, [NAMESPACE], helm=str(wrapper), resync_interval=RESYNC)
        operator.start()
        startup_calls = len(_calls(calls_log))
        with Watched(custom, NAMESPACE, ready) as watched:
            started = time.monotonic()
            for index in range(RELEASES):
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    PLURAL,
                    helmrelease(f"r{index:03d}", chart, {"message": f"release {index}"}, wait=False),
                )
            wait_all(watched, RELEASES, 60 + RELEASES * 10, operator)
        install_seconds = time.monotonic() - started
        installs = [c for c in _calls(calls_log) if c.startswith("install")]

        # The next resync pass over everything (drift checks included), with the chart already cached.
        before = len(_calls(calls_log))
        marker = time.time()
        pid = operator.process.popen.pid if operator.process.popen else 0
        passes_before = _passes(operator)
        cpu_before = cpu_seconds(pid)

        def checked(item: dict) -> bool:  # type: ignore[type-arg]
            stamp = (item.get("status") or {}).get("lastDriftCheck")
            if not stamp:
                return False
            from datetime import datetime

            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() > marker

        with profiled(pid, "resync"), Watched(custom, NAMESPACE, checked) as watched:
            wait_all(watched, RELEASES, 120 + RELEASES, operator)
        cpu_window = cpu_seconds(pid) - cpu_before
        # The window ends when every release has been checked once; the resync timers are spread over a whole
        # interval (plus jitter), so some releases were passed twice by then. The figure is the CPU of one pass
        # over RELEASES: the window's CPU (idle overhead included) per pass counted, times RELEASES.
        passes = _passes(operator) - passes_before
        cpu_pass = cpu_window / max(passes, 1) * RELEASES
        resync_calls = _calls(calls_log)[before:]  # `before` counts the startup calls already
        rss = _process_tree_rss(pid)
        items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
        from datetime import datetime

        stamps = sorted(
            datetime.fromisoformat(i["status"]["lastDriftCheck"].replace("Z", "+00:00")).timestamp()
            for i in items
        )
        spread = stamps[-1] - stamps[0]

        # Baselines, same releases, same machine, same run.
        status_times = []
        for index in range(RELEASES):
            t0 = time.monotonic()
            helm.run("status", f"{NAMESPACE}-r{index:03d}", "--namespace", NAMESPACE, "--output", "json")
            status_times.append(time.monotonic() - t0)
        dry_times = []
        for index in range(min(RELEASES, 20)):
            t0 = time.monotonic()
            helm.run(
                "upgrade",
                f"{NAMESPACE}-r{index:03d}",
                "app",
                "--repo",
                repo.url,
                "--version",
                "0.1.0",
                "--namespace",
                NAMESPACE,
                "--dry-run=server",
                "--set",
                f"message=release {index}",
            )
            dry_times.append(time.monotonic() - t0)
        helm_status_total = sum(status_times)
        dry_run_total = statistics.mean(dry_times) * RELEASES

        print(f"releases: {RELEASES}")
        print(
            f"install via operator: {install_seconds:.1f}s ({len(installs)} helm installs, "
            f"{install_seconds / RELEASES:.2f}s per release, workers=4)"
        )
        print(f"operator start: {startup_calls} helm call(s) (version detection)")
        print(
            f"one resync pass with drift checks over {RELEASES} releases: operator CPU {cpu_pass:.2f}s "
            f"({cpu_pass / RELEASES * 1000:.1f} ms per release; measured {cpu_window:.2f}s over {passes} passes "
            f"until every release was checked once), spread over {spread:.1f}s by jitter, "
            f"helm processes spawned: {len(resync_calls)}"
        )
        print(
            f"plain helm, `helm status` per release: {helm_status_total:.1f}s total, "
            f"{statistics.mean(status_times) * 1000:.0f} ms each"
        )
        print(
            f"plain helm, dry-run upgrade per release (Flux v1 style), extrapolated: {dry_run_total:.1f}s "
            f"({statistics.mean(dry_times) * 1000:.0f} ms each)"
        )
        print(
            f"helm processes per resync: operator {len(resync_calls)} vs naive {RELEASES} (status) "
            f"or {RELEASES} (dry-run upgrade)"
        )
        print(
            f"ratio, operator resync CPU / plain `helm status` wall: {cpu_pass / helm_status_total:.3f}; "
            f"/ dry-run upgrades: {cpu_pass / dry_run_total:.3f}"
        )
        print(
            f"B2 target: operator CPU <= {TARGET_CPU_SECONDS:.1f}s for the pass, 0 helm processes: "
            f"{'met' if cpu_pass <= TARGET_CPU_SECONDS and not resync_calls else 'MISSED'}"
        )
        print(f"operator RSS at steady state: {rss / 1024:.0f} MiB for {RELEASES} releases")
        if resync_calls:
            print("unexpected helm calls during resync:", resync_calls[:5])
    finally:
        if operator is not None:
            operator.stop()
        if repo is not None:
            repo.stop()
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
