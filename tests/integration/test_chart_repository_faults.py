"""Faults of a Helm chart repository, through the real operator and the real helm: a proxy in front of the chart
repository fixture answers 404, 500, a malformed or a huge index.yaml, a chart package that is no gzip, or stalls.

Every scenario is a repository URL of its own on one proxy (``/<scenario>/index.yaml``), so all of them fail at
once in one operator, beside a healthy release that must go on reconciling meanwhile. Each fault must read as a
person needs it: ``Ready=False`` with reason ``ChartFetchFailed`` and a message that names the problem, one
Warning Event however many retries follow, no traceback in the log; and the release recovers by itself once the
repository heals.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s
from tests.support import charts as charts_mod
from tests.support.charts import ChartRepository
from tests.support.fault_proxy import Answer, Fault, FaultProxy, Kind
from tests.support.helmtool import Helm
from tests.support.operator import (
    StartOperator,
    condition,
    create_hr,
    events_for,
    get_hr,
    helmrelease,
    ready,
    wait_for_hr,
)
from tests.support.procs import binary
from tests.support.wait import eventually

from helmrelease.api.constants import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.usefixtures("crd_installed", "node_simulator")

#: What --chart-timeout the operator runs with: long beside a healthy fetch on a loaded machine, short for a test.
CHART_TIMEOUT = 30
#: The huge index: 200,000 entries, about 50 MiB, the size of the largest public repositories' and then some.
HUGE_ENTRIES = 200_000

# Wraps helm to record each run's arguments, duration and peak memory (getrusage of its child) as JSON lines.
HELM_RECORDER = """#!{python}
import json, os, resource, signal, subprocess, sys, time
started = time.monotonic()
config = os.environ.get("HELM_REPOSITORY_CONFIG")
repositories = open(config).read() if config and os.path.exists(config) else ""
code = subprocess.call([{helm!r}, *sys.argv[1:]])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "seconds": time.monotonic() - started, "max_rss_kib": peak,
                          "code": code, "repositories": repositories}}) + "\\n")
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


@functools.cache
def huge_index(entries: int, real_index: bytes) -> bytes:
    """A valid index.yaml of `entries` filler chart versions, with the real repository's own entries kept."""
    lines = ["apiVersion: v1", "entries:"]
    real = real_index.decode().split("entries:\n", 1)[1].split("\ngenerated:", 1)[0]
    lines.append(real.rstrip("\n"))
    per_chart = 1000
    for chart in range(entries // per_chart):
        lines.append(f"  filler-{chart:04d}:")
        for version in range(per_chart):
            lines += [
                "  - apiVersion: v2",
                f"    name: filler-{chart:04d}",
                f"    version: 1.{version // 100}.{version % 100}",
                '    created: "2026-01-01T00:00:00Z"',
                f"    digest: {chart:032x}{version:032x}",
                f"    description: a filler chart that pads the index to the size of a very large repository {chart}",
                f"    urls: [filler-{chart:04d}-1.{version // 100}.{version % 100}.tgz]",
            ]
    lines.append('generated: "2026-01-01T00:00:00Z"')
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Scenario:
    """One fault: what the proxy answers for which paths of the repository, and what the condition must say."""

    name: str
    answer: Answer
    where: Callable[[str], bool]  # the path within the scenario's repository
    says: str  # a regular expression the ChartFetched message must match


def the_index(path: str) -> bool:
    return path == "/index.yaml"


def the_packages(path: str) -> bool:
    return path.endswith(".tgz")


def within(name: str, path: str) -> str | None:
    """The path inside scenario ``name``'s repository, or None for another one's."""
    scenario, _, rest = path.lstrip("/").partition("/")
    return "/" + rest if scenario == name else None


@dataclass
class FaultyRepository:
    """The proxy in front of a copy of the chart repository whose index names packages by relative URL (so that
    the packages, too, are fetched through the proxy), and the faults it injects until each is healed."""

    proxy: FaultProxy
    upstream: ChartRepository
    scenarios: list[Scenario]
    healed: set[str]

    def url(self, scenario: str) -> str:
        return f"http://{self.proxy.host}/{scenario}/"

    def asked(self, scenario: str, suffix: str) -> list[float]:
        return [
            entry.arrived
            for entry in self.proxy.entries()
            if entry.path.startswith(f"/{scenario}/") and entry.path.endswith(suffix)
        ]


def scenarios(real_index: bytes) -> list[Scenario]:
    def huge_body() -> Iterable[bytes]:
        body = huge_index(HUGE_ENTRIES, real_index)
        return (body[start : start + (1 << 20)] for start in range(0, len(body), 1 << 20))

    body_length = len(huge_index(HUGE_ENTRIES, real_index))
    return [
        Scenario(
            "not-found", Answer(404, b"404 page not found\n"), the_index, r"index\.yaml : 404 Not Found"
        ),
        Scenario(
            "server-error",
            Answer(500, b"upstream exploded\n"),
            the_index,
            r"index\.yaml : 500 Internal Server Error",
        ),
        Scenario(
            "malformed",
            Answer(200, b"apiVersion: v1\nentries:\n  app: [{name: app, version: 0.1.0, urls: [\n"),
            the_index,
            r"(?i)yaml",
        ),
        Scenario(
            "not-gzip",
            Answer(200, b"<html><body>502 Bad Gateway</body></html>\n"),
            the_packages,
            r"app-0\.1\.0\.tgz is not a chart package \(a gzip-compressed tar archive\)",
        ),
        Scenario(
            "slow",
            Answer(200, real_index, delay=3600),
            the_index,
            rf"did not finish within {CHART_TIMEOUT}s and was stopped",
        ),
        Scenario(
            "huge",
            Answer(200, huge_body, length=body_length),
            the_index,
            r"index\.yaml is larger than 32 MiB, the limit of --max-index-size \(helm holds the whole index in memory\)",
        ),
    ]


@pytest.fixture(scope="module")
def faulty_repository(helm: Helm, chart_repo: ChartRepository, workdir: Path) -> Iterator[FaultyRepository]:
    directory = workdir / "faulty-chart-repo"
    directory.mkdir()
    for package in chart_repo.directory.glob("app-*.tgz"):
        shutil.copy(package, directory)
    helm.run("repo", "index", str(directory))  # no --url: packages by relative URL, through the proxy
    upstream = charts_mod.serve_directory(directory)
    real_index = (directory / "index.yaml").read_bytes()
    plans = scenarios(real_index)
    healed: set[str] = set()

    def hits(scenario: Scenario) -> Callable[[str, str], bool]:
        def hit(method: str, path: str) -> bool:
            inside = within(scenario.name, path)
            return scenario.name not in healed and inside is not None and scenario.where(inside)

        return hit

    proxy = FaultProxy(
        upstream.url.removeprefix("http://").rstrip("/"),
        route=lambda path: "/" + path.lstrip("/").partition("/")[2],
    ).start()
    proxy.inject(*(Fault(Kind.ANSWER, hits(scenario), answer=scenario.answer) for scenario in plans))
    yield FaultyRepository(proxy, upstream, plans, healed)
    proxy.stop()
    upstream.stop()


def warnings(core: k8s.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str, str]]:
    return [event for event in events_for(core, namespace, name) if event[0] == "Warning"]


def test_chart_repository_faults_are_told_once_and_heal_by_themselves(
    start_operator: StartOperator,
    custom: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    namespace: str,
    faulty_repository: FaultyRepository,
    chart_repo: ChartRepository,
    tmp_path: Path,
) -> None:
    repo = faulty_repository
    helm_log = tmp_path / "helm-runs.jsonl"
    recorder = tmp_path / "helm"
    recorder.write_text(HELM_RECORDER.format(python=sys.executable, helm=binary("helm"), log=str(helm_log)))
    recorder.chmod(0o755)
    operator = start_operator(
        "--chart-timeout", str(CHART_TIMEOUT), "--helm", str(recorder), resync_interval=5
    )
    names = [scenario.name for scenario in repo.scenarios]

    create_hr(
        custom,
        namespace,
        helmrelease("healthy", {"repository": chart_repo.url, "name": "app", "version": "0.1.0"}),
    )
    wait_for_hr(custom, namespace, "healthy", ready, operator=operator, what="the healthy release Ready")
    for name in names:
        chart = {"repository": repo.url(name), "name": "app", "version": "0.1.0"}
        create_hr(custom, namespace, helmrelease(name, chart, {"message": name}))

    said: dict[str, str] = {}
    started = time.monotonic()
    for scenario in repo.scenarios:
        hr = wait_for_hr(
            custom,
            namespace,
            scenario.name,
            lambda hr: condition(hr, "Ready").get("reason") == "ChartFetchFailed",
            operator=operator,
            timeout=CHART_TIMEOUT + 120,
            what="Ready=False, ChartFetchFailed",
        )
        ready_condition, fetched = condition(hr, "Ready"), condition(hr, "ChartFetched")
        assert ready_condition["status"] == "False"
        assert (fetched["status"], fetched["reason"]) == ("False", "ChartFetchFailed")
        assert re.search(scenario.says, fetched["message"]), (scenario.name, fetched["message"])
        assert fetched["message"].startswith(f"Fetching chart app 0.1.0 from {repo.url(scenario.name)}")
        said[scenario.name] = fetched["message"]

    told_at = time.monotonic()
    # Meanwhile the healthy release goes on: changed while the slow repository holds a fetch, it is upgraded
    # before that fetch could even time out.
    slow_started = eventually(
        lambda: [at for at in repo.asked("slow", "/index.yaml") if time.monotonic() - at < 3],
        CHART_TIMEOUT + 60,
        "a fresh stalled fetch from the slow repository",
    )[-1]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "healthy", {"spec": {"values": {"message": "while others fail"}}}
    )
    wait_for_hr(
        custom,
        namespace,
        "healthy",
        lambda hr: ready(hr) and hr["metadata"]["generation"] == 2,
        operator=operator,
        what="the healthy release upgraded",
    )
    assert time.monotonic() < slow_started + CHART_TIMEOUT, (
        "the healthy release waited for the slow repository"
    )
    assert (
        core.read_namespaced_config_map(f"{namespace}-healthy", namespace).data["message"]
        == "while others fail"
    )

    # Two more failed passes of each (a third request seen: the second pass ended before it began), one Event.
    for name in names:
        suffix = ".tgz" if name == "not-gzip" else "/index.yaml"
        eventually(
            lambda name=name, suffix=suffix: len(repo.asked(name, suffix)) >= 3,  # type: ignore[misc]
            3 * (CHART_TIMEOUT + 60),
            f"three fetches from the {name} repository",
            context=operator.tail,
        )
    for name in names:
        told = warnings(core, namespace, name)
        assert [(kind, reason) for kind, reason, _ in told] == [("Warning", "ChartFetchFailed")], (name, told)
        assert told[0][2] in said[name], (name, told[0][2], said[name])
        assert condition(get_hr(custom, namespace, name), "ChartFetched")["message"] == said[name]

    runs_before_healing = len(helm_log.read_text().splitlines())
    timings = {
        "faults_told": round(told_at - started, 1),
        "retries_seen": round(time.monotonic() - started, 1),
    }
    repo.healed.update(names)
    healed_at = time.monotonic()
    recovered: dict[str, float] = {}
    for name in names:
        wait_for_hr(
            custom, namespace, name, ready, operator=operator, timeout=CHART_TIMEOUT + 120, what="Ready again"
        )
        recovered[name] = time.monotonic() - healed_at
        assert core.read_namespaced_config_map(f"{namespace}-{name}", namespace).data["message"] == name
        assert [reason for kind, reason, _ in warnings(core, namespace, name)] == ["ChartFetchFailed"]

    log = operator.log()
    assert "Traceback" not in log, operator.tail(200)
    runs = [json.loads(line) for line in helm_log.read_text().splitlines()]
    # Until it healed, helm never read the huge index (the check before it did, counting, keeping nothing).
    huge = repo.url("huge").rstrip("/")
    assert not [run for run in runs[:runs_before_healing] if huge in run["repositories"]], "helm read it"
    record = {
        name: {
            "reason": "ChartFetchFailed",
            "message": said[name],
            "warning_events": 1,
            "fetches_while_failing": len(repo.asked(name, ".tgz" if name == "not-gzip" else "/index.yaml")),
            "recovered_after_s": round(recovered[name], 1),
        }
        for name in names
    }
    record["helm_peak_rss_mib"] = max(run["max_rss_kib"] for run in runs) // 1024  # type: ignore[assignment]
    record["timings"] = timings  # type: ignore[assignment]
    print(json.dumps(record, indent=1), os.linesep)
