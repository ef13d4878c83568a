"""Image-policy scan cost: 200 HelmReleases over 50 registry repositories of 500 tags each.

Starts its own control plane and registry, pushes the tags through the registry's HTTP API (a shared layer
per repository, a config blob per tag for its own build time), creates the HelmReleases with four policies
per repository (``semver:`` needs tag lists only; ``glob:``, ``regex:`` and the default need build times),
then runs the sidecar in a child process with a state directory: a cold cycle and a second one, then a
second child over the same state directory (a restart) for one cycle. Per cycle: the registry requests by
kind, the cache lookups, the wall time, the updates made, and what the requests would take at the default
rate limit; and the children's peak RSS.

The cold cycle fetches every tag's manifest (by tag) and config blob; the second lists the tags and sends a
HEAD for each image's current tag and best candidate plus the rolling re-check slice (``automation.lookups``);
the restarted one costs the same, from the tag cache in the state directory. The baseline, run on the same
caches after the second cycle, re-checks every tag (a HEAD per tag: the scan before the lookup plan). If
pushing would exceed the setup budget, fewer repositories are pushed, and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import resource
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

import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import CollectorRegistry

from helmrelease.adapters.kube import KubeClient
from helmrelease.adapters.registry import RegistryConfig, RegistryMetrics
from helmrelease.adapters.registry.tagcache import FILE_NAME, TagCacheFile
from helmrelease.api.constants import GROUP, PLURAL, VERSION
from helmrelease.automation import AutomationMetrics, ImagePolicyService, ImagePolicySettings, RegistryPool
from helmrelease.automation.lookups import DEFAULT_RECHECK_PERIOD, RecheckBudget
from helmrelease.cli.image_policy import DEFAULT_CACHE_ENTRIES
from helmrelease.images.policy import DEFAULT_POLICY, TagOrder, parse_policy
from tests.support import controlplane, registry
from tests.support.kubectl import kubectl
from tests.support.procs import REPO_ROOT
from tests.support.registry import metric_samples

# The scale; the variables shrink it while developing (the table says what ran).
REPOSITORIES = int(os.environ.get("BENCH_IMAGE_SCAN_REPOSITORIES", "50"))
TAGS_PER_REPOSITORY = int(os.environ.get("BENCH_IMAGE_SCAN_TAGS", "500"))
RELEASES = int(os.environ.get("BENCH_IMAGE_SCAN_RELEASES", "200"))
SETUP_BUDGET_SECONDS = float(os.environ.get("BENCH_IMAGE_SCAN_SETUP_BUDGET", "300"))
PUSH_THREADS = 16
REGISTRY_CONCURRENCY = 16
REGISTRY_RPS = 10_000.0
INTERVAL = 300.0  # the sidecar's default: it sizes the rolling re-check
BASELINE = "every tag"  # the phase that re-checks every tag, as the scan did before
POLICIES = ("semver:~1.3", "glob:1.*", r"regex:^1\.1[0-9]\.", None)  # None: the default, glob:*
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def tag_name(index: int) -> str:
    """``1.<minor>.<patch>``: 20 patches per minor, so semver, glob and regex policies all find candidates."""
    return f"1.{index // 20}.{index % 20}"


def built_at(index: int) -> dt.datetime:
    """Mostly newer with each tag, with rebuilds of older versions mixed in (build order is not semver order)."""
    return T0 + dt.timedelta(minutes=index * 10 - (index % 7) * 25)


class Pusher:
    """Pushes OCI images concurrently over plain HTTP: a session per thread, one layer per repository, and no
    existence checks, so a tag costs three requests (``tests.support.registry.ImagePusher`` spends seven on
    its own layer and checks, which is right for tests and too slow for 25 000 tags)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        session = self._session()
        started = session.post(f"{self.base_url}/v2/{repository}/blobs/uploads/", timeout=30)
        started.raise_for_status()
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.base_url + location
        separator = "&" if "?" in location else "?"
        session.put(
            f"{location}{separator}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        ).raise_for_status()
        return digest

    def image(self, repository: str, tag: str, created: dt.datetime, layer: tuple[str, int]) -> None:
        config = json.dumps(
            {
                "created": created.isoformat().replace("+00:00", "Z"),
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer[0]]},
            }
        ).encode()
        config_digest = self.blob(repository, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer[0],
                        "size": layer[1],
                    }
                ],
            }
        ).encode()
        self._session().put(
            f"{self.base_url}/v2/{repository}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
            timeout=30,
        ).raise_for_status()

    def repository(self, repository: str, tags: int, pool: ThreadPoolExecutor) -> None:
        layer = f"layer of {repository}".encode()
        layer_ref = (self.blob(repository, layer), len(layer))
        list(pool.map(lambda i: self.image(repository, tag_name(i), built_at(i), layer_ref), range(tags)))


def push_all(base_url: str, repositories: int, tags: int, budget: float) -> tuple[int, float]:
    """Push ``repositories`` repositories, or as many as the first one's speed says fit in ``budget``."""
    pusher = Pusher(base_url)
    started = time.monotonic()
    with ThreadPoolExecutor(PUSH_THREADS) as pool:
        pusher.repository(repository_name(0), tags, pool)
        per_repository = time.monotonic() - started
        feasible = max(1, min(repositories, int(budget / per_repository)))
        print(
            f"  first repository: {tags} tags in {per_repository:.1f}s; pushing {feasible} of {repositories}",
            flush=True,
        )
        for index in range(1, feasible):
            pusher.repository(repository_name(index), tags, pool)
    return feasible, time.monotonic() - started


def repository_name(index: int) -> str:
    return f"bench/app-{index:02d}"


def policy_of(index: int, repositories: int) -> str | None:
    """Release ``index``'s policy: the releases of one repository get different ones."""
    return POLICIES[(index // repositories) % len(POLICIES)]


def helmreleases(host: str, repositories: int, releases: int) -> Iterator[dict[str, Any]]:
    """Releases spread over the repositories, four policies per repository, the five value shapes in turn."""
    for index in range(releases):
        image = f"{host}/{repository_name(index % repositories)}"
        policy = policy_of(index, repositories)
        shapes: list[dict[str, Any]] = [
            {"image": f"{image}:1.0.0"},
            {"image": image, "tag": "1.0.0"},
            {"registry": host, "image": image.removeprefix(f"{host}/"), "tag": "1.0.0"},
            {"image": {"repository": image, "tag": "1.0.0"}},
            {"app": {"image": {"repository": image, "tag": "1.0.0"}}},
        ]
        values = shapes[index % len(shapes)]
        container = "app" if "app" in values else "chart-image"
        annotations = {"fluxcd.io/automated": "true"}
        if policy is not None:
            annotations[f"fluxcd.io/tag.{container}"] = policy
        yield {
            "apiVersion": "helm.fluxcd.io/v1",
            "kind": "HelmRelease",
            "metadata": {"name": f"hr-{index:03d}", "annotations": annotations},
            "spec": {
                "chart": {"repository": "http://charts.example.invalid/", "name": "app", "version": "1.0.0"},
                "values": values,
            },
        }


# --- the measured child ---------------------------------------------------------------------------------


def current_rss_mib() -> float:
    """Resident memory now (``ru_maxrss`` only knows the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _measure(
    kubeconfig: str, host: str, namespace: str, state_dir: Path, phases: list[str]
) -> dict[str, Any]:
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    metrics = CollectorRegistry()
    config = RegistryConfig(
        insecure_hosts=frozenset({host}),
        concurrency=REGISTRY_CONCURRENCY,
        requests_per_second=REGISTRY_RPS,
        burst=int(REGISTRY_RPS),
        config_cache_size=DEFAULT_CACHE_ENTRIES,
        manifest_cache_size=DEFAULT_CACHE_ENTRIES,
    )
    state = TagCacheFile(state_dir / FILE_NAME, max_entries=DEFAULT_CACHE_ENTRIES)
    pool = RegistryPool(config, RegistryMetrics.create(metrics), state=state)
    service = ImagePolicyService(
        KubeClient(api),
        pool,
        settings=ImagePolicySettings(interval=INTERVAL, namespaces=(namespace,)),
        metrics=AutomationMetrics.create(metrics),
    )
    # The baseline: the same pool and caches, every tag re-checked each cycle (a re-check period no longer
    # than the interval), which is what the scan did before the lookup plan: a HEAD per tag.
    every_tag = ImagePolicyService(
        KubeClient(api),
        pool,
        settings=ImagePolicySettings(interval=INTERVAL, namespaces=(namespace,), tag_recheck_period=INTERVAL),
        metrics=AutomationMetrics.create(CollectorRegistry()),
    )
    cycles = []
    try:
        for number in phases:
            requests_before = metric_samples(metrics, "helmrelease_registry_requests_total", ("kind", "code"))
            cache_before = metric_samples(
                metrics, "helmrelease_registry_cache_lookups_total", ("cache", "result")
            )
            started = time.monotonic()
            report = await (every_tag if number == BASELINE else service).run_cycle()
            wall = time.monotonic() - started
            requests_made = (
                metric_samples(metrics, "helmrelease_registry_requests_total", ("kind", "code"))
                - requests_before
            )
            cache = (
                metric_samples(metrics, "helmrelease_registry_cache_lookups_total", ("cache", "result"))
                - cache_before
            )
            cycles.append(
                {
                    "cycle": number,
                    "wall_seconds": round(wall, 2),
                    "requests": {"/".join(key): int(value) for key, value in sorted(requests_made.items())},
                    "cache": {"/".join(key): int(value) for key, value in sorted(cache.items())},
                    "releases": len(report.releases),
                    "updates": len(report.moves),
                    "failed": report.failed,
                    "rss_mib": current_rss_mib(),
                }
            )
    finally:
        await pool.close()
        api.close()
    return {
        "cycles": cycles,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "baseline_rss_mib": round(baseline_rss / 1024, 1),
    }


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kubeconfig")
    parser.add_argument("host")
    parser.add_argument("namespace")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("phases", nargs="+")
    args = parser.parse_args(argv)
    measured = _measure(args.kubeconfig, args.host, args.namespace, args.state_dir, args.phases)
    print(json.dumps(asyncio.run(measured)))


# --- the driver -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    repositories: int
    push_seconds: float
    releases: int


def build_time_lookups(policy_text: str | None, tags: int) -> int:
    """How many build times one release with this policy needs: its eligible tags and its current one."""
    policy = parse_policy(policy_text or DEFAULT_POLICY)
    if policy.default_order is not TagOrder.CREATED:
        return 0
    eligible = sum(policy.matches(tag_name(index)) for index in range(tags))
    return eligible + (0 if policy.matches(tag_name(0)) else 1)


def _by_kind(cycle: dict[str, Any]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for key, count in cycle["requests"].items():
        kinds[key.split("/")[0]] += count
    return kinds


def _print(setup: Setup, measured: dict[str, Any]) -> None:
    print(
        f"\n{setup.releases} HelmReleases over {setup.repositories} repositories x {TAGS_PER_REPOSITORY} tags"
        f" ({setup.repositories * TAGS_PER_REPOSITORY} tags pushed in {setup.push_seconds:.0f}s)"
    )
    if setup.repositories < REPOSITORIES:
        print(
            f"NOTE: reduced from {REPOSITORIES} repositories to fit the {SETUP_BUDGET_SECONDS:.0f}s setup budget"
        )
    rolling = RecheckBudget(INTERVAL).rolling(TAGS_PER_REPOSITORY)
    print(
        f"registry client: concurrency {REGISTRY_CONCURRENCY}, {REGISTRY_RPS:.0f} req/s per registry, "
        "digest caches and tag cache as `helmrelease image-policy` sizes them; "
        f"rolling re-check: ceil(tags x {INTERVAL:g}s / {DEFAULT_RECHECK_PERIOD / 3600:g}h) = {rolling} "
        f"per image and cycle for {TAGS_PER_REPOSITORY} tags, every tag re-checked within "
        f"{DEFAULT_RECHECK_PERIOD / 3600:g}h (+ the cycles' own time)"
    )
    header = (
        f"{'cycle':<10}{'wall s':>8}{'requests':>10}{'tags':>7}{'manifest':>10}{'blobs':>7}"
        f"{'updates':>9}{'at 10 req/s':>13}"
    )
    print(header)
    for cycle in measured["cycles"]:
        kinds = _by_kind(cycle)
        total = sum(kinds.values())
        print(
            f"{cycle['cycle']:<10}{cycle['wall_seconds']:>8.1f}{total:>10}{kinds['tags']:>7}{kinds['manifest']:>10}"
            f"{kinds['blob']:>7}{cycle['updates']:>9}"
            f"{_at_default_rate(total):>13}"
        )
    by_name = {cycle["cycle"]: sum(cycle["requests"].values()) for cycle in measured["cycles"]}
    images = sum(build_time_lookups(policy_of(i, setup.repositories), 1) > 0 for i in range(setup.releases))
    target = setup.repositories + images * (2 + rolling)
    print(
        f"second cycle: {by_name[BASELINE] / max(1, by_name['second']):.1f}x fewer requests than re-checking every "
        f"tag (the baseline, measured in this run) and {by_name['cold'] / max(1, by_name['second']):.1f}x fewer "
        "than the cold one; "
        f"target <= {setup.repositories} tag lists + {images} images x (2 + {rolling}) = {target}: "
        f"second {by_name['second']}, after restart {by_name['restart']}"
    )
    print(f"tag cache file: {measured['state_bytes'] / 1024:.0f} KiB")
    for cycle in measured["cycles"]:
        print(
            f"{cycle['cycle']} requests {cycle['requests']}; cache {cycle['cache']}; "
            f"failed: {cycle['failed']}; RSS after it {cycle['rss_mib']} MiB"
        )
    print(
        f"peak RSS of the sidecar process: {measured['peak_rss_mib']} MiB (after imports: "
        f"{measured['baseline_rss_mib']} MiB; restarted: {measured['restart_peak_rss_mib']} MiB)"
    )


def _at_default_rate(requests: int) -> str:
    """What the cycle would take at the default 10 requests/s (the rate, not the registry, bounds it)."""
    seconds = requests / RegistryConfig.requests_per_second
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _run_child(kubeconfig: Path, host: str, namespace: str, state_dir: Path, phases: list[str]) -> Any:
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.bench_image_scan",
            str(kubeconfig),
            host,
            namespace,
            str(state_dir),
            *phases,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if child.returncode != 0:
        raise RuntimeError(f"measurement failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-image-scan-") as scratch:
        workdir = Path(scratch)
        plane = controlplane.start(workdir / "controlplane")
        reg = registry.start(workdir / "registry")
        try:
            kubectl(
                plane.kubeconfig, "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "helmrelease.yaml")
            )
            kubectl(
                plane.kubeconfig, "wait", "--for=condition=Established", "crd/helmreleases.helm.fluxcd.io"
            )
            print(
                f"pushing up to {REPOSITORIES} x {TAGS_PER_REPOSITORY} tags ({PUSH_THREADS} threads)",
                flush=True,
            )
            repositories, push_seconds = push_all(
                reg.url, REPOSITORIES, TAGS_PER_REPOSITORY, SETUP_BUDGET_SECONDS
            )
            api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            namespace = "bench"
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
            core.create_namespaced_service_account(
                namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="default"))
            )
            for body in helmreleases(reg.host, repositories, RELEASES):
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            api.close()
            state_dir = workdir / "sidecar-state"
            print("running cold and second cycles in a child process, then a restarted one", flush=True)
            first = _run_child(plane.kubeconfig, reg.host, namespace, state_dir, ["cold", "second", BASELINE])
            restarted = _run_child(plane.kubeconfig, reg.host, namespace, state_dir, ["restart"])
            measured = {
                **first,
                "cycles": first["cycles"] + restarted["cycles"],
                "state_bytes": (state_dir / FILE_NAME).stat().st_size,
                "restart_peak_rss_mib": restarted["peak_rss_mib"],
            }
            _print(Setup(repositories, push_seconds, RELEASES), measured)
        finally:
            reg.stop()
            plane.stop()


if __name__ == "__main__":
    _child(sys.argv[1:])
