"""The sidecar process (``helmrelease image-policy``) against hostile and hopeless annotations and manifests.

Real process, real kube-apiserver, registry and git remote: a catastrophic-backtracking ``regex:`` policy
decides at once while another release moves in the same cycle; annotations that can do nothing are a
Warning Event once per object and value however many cycles run; a manifest in git that does not parse is
named in a WARNING log line once per content while the other manifests still go through.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.integration.test_git_writeback import Remote
from tests.integration.test_image_policy import (
    AUTOMATED,
    MANIFEST,
    Releases,
    app,
    releases,
    remote,
    seed,
)
from tests.integration.test_image_policy_cli import _environment, helmrelease_cli, sidecar_args
from tests.support.procs import Process
from tests.support.registry import ImagePusher, Registry, utc
from tests.support.sidecar import wait_for_cycles

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["app", "releases", "remote"]  # fixtures shared with test_image_policy

SEMVER = {**AUTOMATED, "fluxcd.io/tag.chart-image": "semver:~1.0"}
A36 = "a" * 36


@pytest.fixture(scope="module")
def hostile_tags(pusher: ImagePusher) -> str:
    """A repository whose tags feed a catastrophic backtracking: 36 ``a`` and a ``-`` (issue 7, item 12)."""
    repository = f"team/hostile-{uuid.uuid4().hex[:8]}"
    for tag, minutes in (("a", 30), (A36 + "-", 20), ("aa", 10)):
        pusher.push(repository, tag, created=utc(minutes))
    return f"{pusher.registry.host}/{repository}"


# --- item 12: a hostile regex holds up nobody -------------------------------------------------------------


def test_a_catastrophic_regex_decides_at_once_and_the_others_move_in_the_same_cycle(
    hostile_tags: str, app: str, registry: Registry, releases: Releases, kubeconfig: Path, namespace: str
) -> None:
    releases.create(
        "hostile", {"image": f"{hostile_tags}:a"}, {**AUTOMATED, "fluxcd.io/tag.chart-image": "regex:^(a+)+$"}
    )
    releases.create("other", {"image": f"{app}:1.0.0"}, SEMVER)
    releases.create(
        "backreference",
        {"image": f"{app}:1.0.0"},
        {**AUTOMATED, "fluxcd.io/tag.chart-image": r"regex:^1\.0\.(\d)\1$"},
    )

    result = helmrelease_cli(*sidecar_args(kubeconfig, namespace, registry, "--once"), timeout=120)

    assert result.returncode == 1, result.stderr  # the refused pattern is a failure of this cycle
    assert releases.values("hostile") == {"image": f"{hostile_tags}:aa"}  # 36 a and a "-" never matched
    assert releases.values("other") == {"image": f"{app}:1.0.5"}
    assert sorted(result.stdout.splitlines()) == sorted(
        [
            f"{namespace}/hostile chart-image: {hostile_tags} a → aa (regex:^(a+)+$)",
            f"{namespace}/other chart-image: {app} 1.0.0 → 1.0.5 (semver:~1.0)",
        ]
    )
    assert releases.values("backreference") == {"image": f"{app}:1.0.0"}
    assert releases.events("backreference") == [
        (
            "Warning",
            "ImagePolicyInvalid",
            r"chart-image: tag policy 'regex:^1\\.0\\.(\\d)\\1$' does not parse: regular expression "
            r"'^1\\.0\\.(\\d)\\1$' does not compile (RE2 syntax, Go's regexp as in Flux v1): invalid escape "
            r"sequence: \1; backreferences need backtracking, which RE2 (linear time) does not do; "
            "its tag is not updated",
        )
    ]


# --- item 18: quiet failures get a word, once -------------------------------------------------------------


@pytest.fixture
def start_sidecar(
    kubeconfig: Path, namespace: str, registry: Registry, tmp_path: Path
) -> Iterator[Callable[..., Process]]:
    """The sidecar loop, cycling every second, its log in a file the test reads as a user would."""
    started: list[Process] = []

    def start(*extra: str) -> Process:
        args = sidecar_args(kubeconfig, namespace, registry, "--interval", "1", *extra)
        env = dict(_environment(), PYTHONUNBUFFERED="1")
        log = tmp_path / f"sidecar-{len(started)}.log"
        process = Process("sidecar", [sys.executable, "-m", "helmrelease", *args], log, env=env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


QUIET_FAILURES = {
    "typo": (
        {**AUTOMATED, "fluxcd.io/tag.chart-imag": "semver:~1.0"},
        "fluxcd.io/tag.chart-imag names container 'chart-imag', but the release has no image of that name "
        "(its images: chart-image); the annotation applies to nothing",
    ),
    "bracket": (
        {**AUTOMATED, "fluxcd.io/tag.chart-image": "glob:["},
        "chart-image: glob pattern '[' matches no tag: '*' is the only wildcard and every other character "
        "is literal, while a tag is letters, digits, '_', '.' and '-' (not first), at most 128 characters; "
        "its tag is not updated",
    ),
    "please": (
        {"fluxcd.io/automated": "yes please", "fluxcd.io/tag.chart-image": "semver:~1.0"},
        """fluxcd.io/automated: 'yes please' is not "true" or "false", so automated is off""",
    ),
}


def test_annotations_that_do_nothing_are_each_a_warning_once_per_object_and_value(
    start_sidecar: Callable[..., Process], app: str, releases: Releases
) -> None:
    for name, (written, _) in QUIET_FAILURES.items():
        releases.create(name, {"image": {"repository": app, "tag": "1.0.0"}}, written)
    sidecar = start_sidecar()

    def warned(name: str) -> list[str]:
        return [message for _, reason, message in releases.events(name, "ImageAutomationWarning")]

    sidecar.wait_until(lambda: all(warned(name) for name in QUIET_FAILURES), 60, "warned about each release")
    wait_for_cycles(sidecar, 3)  # resyncs: each could have posted again
    for name, (_, message) in QUIET_FAILURES.items():
        assert sorted((kind, reason) for kind, reason, _ in releases.events(name)) == [
            *([("Normal", "ImageUpdated")] if name == "typo" else []),  # glob:* still applies to chart-image
            ("Warning", "ImageAutomationWarning"),
        ]
        assert warned(name) == [message]
    assert releases.values("bracket")["image"]["tag"] == "1.0.0"
    assert releases.values("please")["image"]["tag"] == "1.0.0"

    # An edit that changes the offending value is news; the others stay quiet.
    releases.patch("bracket", {"metadata": {"annotations": {"fluxcd.io/tag.chart-image": "glob:v1.?"}}})
    sidecar.wait_until(lambda: len(warned("bracket")) == 2, 60, "warned about the edited policy")
    wait_for_cycles(sidecar, 2)
    assert warned("bracket")[1].startswith("chart-image: glob pattern 'v1.?' matches no tag: ")
    assert [len(warned(name)) for name in QUIET_FAILURES] == [1, 2, 1]


BROKEN = """\
# a HelmRelease named hr, half edited by hand: not YAML any more
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata: {name: hr
"""


def test_an_unparsable_manifest_is_named_once_per_content_and_the_others_go_through(
    start_sidecar: Callable[..., Process],
    app: str,
    registry: Registry,
    releases: Releases,
    remote: Remote,
    namespace: str,
) -> None:
    """Git holds 1.0.2 in one manifest and the cluster 1.0.0: every cycle tries write-back again (and reads
    the broken file again) without moving, and a second release is written back meanwhile."""
    held = MANIFEST.format(namespace=namespace, image=app).replace("tag: 1.0.0", "tag: 1.0.2")
    moving = MANIFEST.format(namespace=namespace, image=app).replace("name: hr", "name: hr2")
    seed(remote, {"apps/hr.yaml": held, "apps/hr2.yaml": moving, "apps/broken.yaml": BROKEN})
    for name in ("hr", "hr2"):
        releases.create(name, {"image": {"repository": app, "tag": "1.0.0"}, "replicas": 1}, SEMVER)
    sidecar = start_sidecar("--git-url", remote.url, "--git-branch", "main", "--git-writeback-all")

    def named() -> list[str]:
        return [
            line
            for line in sidecar.log_path.read_text(errors="replace").splitlines()
            if "apps/broken.yaml" in line and "WARNING" in line
        ]

    sidecar.wait_until(lambda: releases.values("hr2")["image"]["tag"] == "1.0.5", 60, "moved hr2")
    sidecar.wait_until(lambda: bool(releases.events("hr", "ImageGitWritebackFailed")), 60, "held hr")
    wait_for_cycles(sidecar, 3)
    assert remote.show("apps/hr2.yaml") == moving.replace("tag: 1.0.0", "tag: 1.0.5")
    assert releases.values("hr")["image"]["tag"] == "1.0.0"
    [line] = named()
    assert "git write-back: skipped apps/broken.yaml, which does not parse: not valid YAML: " in line
    assert "\n" not in line

    remote.push_change("apps/broken.yaml", "not YAML any more", "still not YAML")
    sidecar.wait_until(lambda: len(named()) == 2, 60, "named the changed file again")
    wait_for_cycles(sidecar, 2)
    assert len(named()) == 2
