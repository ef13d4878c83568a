"""What the install and scale benchmarks share: a control plane with the CRD and the test charts, N fresh HelmReleases
through the operator against the same N `helm upgrade --install` at the same concurrency, and process figures."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch

from tests.support import charts, controlplane
from tests.support.charts import ChartRepository
from tests.support.helmtool import Helm
from tests.support.kubectl import kubectl
from tests.support.operator import GROUP, PLURAL, VERSION, Operator, helmrelease, ready
from tests.support.procs import REPO_ROOT, binary
from tests.support.wait import eventually

#: helm operations at once: the operator's default --workers, and the baseline's parallel helm processes.
CONCURRENCY = 4


@dataclass
class Bench:
    """One control plane, a chart repository serving the test charts, and clients of both."""

    work: Path
    plane: Any
    helm: Helm
    repo: ChartRepository
    custom: k8s.CustomObjectsApi
    core: k8s.CoreV1Api
    #: The timing wrapper both sides run helm through, and its log.
    helm_path: Path
    helm_log: Path

    @property
    def chart(self) -> dict[str, str]:
        return {"repository": self.repo.url, "name": "app", "version": "0.1.0"}

    @property
    def chart_package(self) -> Path:
        """The packaged chart the repository serves: the baseline installs it from disk, as the operator installs
        from its chart cache."""
        return self.repo.directory / "app-0.1.0.tgz"

    def namespace(self, name: str) -> str:
        kubectl(self.plane.kubeconfig, "create", "namespace", name)
        return name

    def operator(
        self,
        namespaces: list[str],
        *extra: str,
        resync_interval: float = 300,
        env: dict[str, str] | None = None,
    ) -> Operator:
        return Operator(
            self.work,
            self.plane.kubeconfig,
            namespaces,
            helm=str(self.helm_path),
            resync_interval=resync_interval,
            extra_args=extra,
            extra_env=env,
        )


@contextlib.contextmanager
def bench(prefix: str) -> Iterator[Bench]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    plane = controlplane.start(work / "controlplane")
    repo = None
    try:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        helm = Helm.create("helm", work / "helm", plane.kubeconfig)
        repo = charts.serve_repository(helm, work / "charts")
        kubectl(
            plane.kubeconfig, "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "helmrelease.yaml")
        )
        kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "crd/helmreleases.helm.fluxcd.io")
        api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
        wrapper, log = timed_helm(work / "timed-helm")
        yield Bench(work, plane, helm, repo, k8s.CustomObjectsApi(api), k8s.CoreV1Api(api), wrapper, log)
    finally:
        if repo is not None:
            repo.stop()
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)


def plain_helm_installs(bench: Bench, namespace: str, count: int) -> float:
    """Seconds for `count` `helm upgrade --install` of the chart, CONCURRENCY at a time."""

    timed = Helm(str(bench.helm_path), bench.helm.home, bench.helm.kubeconfig)

    def install(index: int) -> None:
        timed.run(
            "upgrade",
            "--install",
            f"{namespace}-r{index:04d}",
            str(bench.chart_package),
            "--namespace",
            namespace,
            "--set",
            f"message=release {index}",
        )

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(install, range(count)))
    return time.monotonic() - started


def create_releases(bench: Bench, namespace: str, count: int) -> None:
    for index in range(count):
        bench.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            helmrelease(f"r{index:04d}", bench.chart, {"message": f"release {index}"}, wait=False),
        )


class Watched:
    """Which HelmReleases of a namespace meet `predicate`, kept from one list and watch stream in a thread.

    Waiting for N releases by listing all N every half second made the control plane encode and the bench decode
    every object each time: at N=200 about 70 lists of 200 objects, control-plane CPU the ratio charged to the
    operator's side (the plain side waits for nothing). A watch costs one list, then the events the apiserver
    encodes for the operator's own watch anyway, as `kubectl wait` does.
    """

    def __init__(self, custom: k8s.CustomObjectsApi, namespace: str, predicate: Any) -> None:
        self.custom, self.namespace, self.predicate = custom, namespace, predicate
        self.meeting: dict[str, bool] = {}
        self._stop = threading.Event()
        self._failure: BaseException | None = None

    def __enter__(self) -> Watched:
        listed = self._list()  # before the caller creates anything: the watch then misses no event
        threading.Thread(
            target=self._run, args=(listed,), name=f"watch-{self.namespace}", daemon=True
        ).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def count(self) -> int:
        if self._failure is not None:
            raise self._failure
        return sum(list(self.meeting.values()))  # list(): one step, while the thread adds names

    def _list(self) -> str:
        listing = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        self.meeting = {item["metadata"]["name"]: bool(self.predicate(item)) for item in listing["items"]}
        return str(listing["metadata"]["resourceVersion"])

    def _run(self, version: str) -> None:
        try:
            while not self._stop.is_set():
                stream = watch.Watch()
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=30,
                ):
                    if self._stop.is_set():
                        stream.stop()
                        break
                    item = event["object"]
                    if event["type"] == "ERROR":  # the version is too old (410): list again
                        version = self._list()
                        break
                    version = item["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        self.meeting.pop(item["metadata"]["name"], None)
                    elif event["type"] != "BOOKMARK":
                        self.meeting[item["metadata"]["name"]] = bool(self.predicate(item))
        except (
            BaseException
        ) as error:  # the waiting thread raises it: a dead watch must not read as "not yet"
            self._failure = error


def wait_all(watched: Watched, count: int, timeout: float, operator: Operator) -> None:
    eventually(
        lambda: watched.count() >= count,
        timeout,
        f"all {count} HelmReleases in {watched.namespace}",
        context=lambda: f"{watched.count()} seen\n{operator.tail(30)}",
    )


def operator_installs(bench: Bench, namespace: str, count: int, operator: Operator) -> float:
    """Seconds from creating `count` HelmReleases to all of them Ready, through a running operator."""
    with Watched(bench.custom, namespace, ready) as watched:
        started = time.monotonic()
        create_releases(bench, namespace, count)
        wait_all(watched, count, 120 + count * 5, operator)
        return time.monotonic() - started


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS), or its peak so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_cpu(bench: Bench) -> float:
    """CPU seconds kube-apiserver and etcd have used so far: the API calls and watch events either side causes."""
    pids = [proc.popen.pid for proc in (bench.plane.apiserver, bench.plane.etcd) if proc.popen is not None]
    return sum(cpu_seconds(pid) for pid in pids)


_REQUEST_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


def api_requests(bench: Bench) -> Counter[str]:
    """Requests kube-apiserver has answered so far, by ``verb resource`` (its ``apiserver_request_total``): what
    each side costs the control plane, call by call. Watches count once, when they open."""
    counts: Counter[str] = Counter()
    for sample in _REQUEST_SAMPLE.finditer(kubectl(bench.plane.kubeconfig, "get", "--raw", "/metrics")):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels.get('verb', '?')} {resource}"] += int(float(sample["value"]))
    return counts


def per_release(before: Counter[str], after: Counter[str], count: int) -> str:
    """The requests between two ``api_requests`` readings, per release, most first (the noise of under 0.1 left out)."""
    spent = after - before
    rows = [f"{key} {value / count:.1f}" for key, value in spent.most_common() if value / count >= 0.1]
    return ", ".join(rows) or "none"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def profiled(pid: int, what: str) -> Iterator[None]:
    """With BENCH_PROFILE=DIR, a py-spy profile of process `pid` while the block runs, as DIR/<what>.txt (collapsed
    stacks: `sort -k2 -n` or any flame graph tool reads them); without it, nothing. With BENCH_PROFILE_GIL=1 too,
    only samples of the thread holding the GIL: where the CPU goes, without threads waiting on sockets and queues."""
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        yield
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    output = Path(directory) / f"{what}.txt"
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
         "--output", str(output), "--rate", "200", "--nonblocking", "--subprocesses",
         *(["--gil"] if os.environ.get("BENCH_PROFILE_GIL") == "1" else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
        print(f"profile of {what}: {output}")


def timed_helm(directory: Path) -> tuple[Path, Path]:
    """A `helm` that logs each run's start, end and first two arguments (`start|end <epoch> <pid> <args>`), for
    both sides of a comparison: how long helm ran, and how many ran at once."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "helm-times.log"
    wrapper = directory / "helm"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "start $(date +%s.%N) $$ $1 $2" >> {log}\n'
        f'{binary("helm")} "$@"\nrc=$?\n'
        f'echo "end $(date +%s.%N) $$ $rc" >> {log}\nexit $rc\n'
    )
    wrapper.chmod(0o755)
    return wrapper, log


@dataclass(frozen=True)
class HelmTimes:
    """What the timing wrapper saw in one phase: helm runs, their total and mean seconds, and the mean number
    running at once over the phase (the concurrency helm was actually given)."""

    runs: int
    commands: dict[str, int]
    busy: float
    mean: float
    concurrency: float


def helm_times(log: Path, since: float, until: float) -> HelmTimes:
    starts: dict[str, tuple[float, str]] = {}
    spans: list[tuple[float, float, str]] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, stamp, pid, *rest = line.split()
        if kind == "start":
            starts[pid] = (float(stamp), rest[0] if rest else "")
        elif pid in starts:
            begun, command = starts.pop(pid)
            if since <= begun <= until:
                spans.append((begun, float(stamp), command))
    busy = sum(end - begun for begun, end, _ in spans)
    commands: dict[str, int] = {}
    for _, _, command in spans:
        commands[command] = commands.get(command, 0) + 1
    return HelmTimes(len(spans), commands, busy, busy / max(len(spans), 1), busy / max(until - since, 1e-9))
