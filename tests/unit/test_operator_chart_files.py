"""The operator's deployment files agree with each other and with the repository: CRD copy, image, chart metadata."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from helmrelease.cli import parse
from helmrelease.cli.settings import ENV_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
CHART = MANIFESTS / "chart" / "helmrelease-operator"
CANONICAL_CRD = REPO_ROOT / "crds" / "helmrelease.yaml"
CHART_CRD = CHART / "crds" / "helmrelease.yaml"
DOCKERFILE = MANIFESTS / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough of the Dockerfile grammar here)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return instructions


def dockerfile_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, ()))
        elif stages:
            last = stages[-1]
            stages[-1] = Stage(last.base, last.name, (*last.instructions, instruction))
    return stages


def copy_from(arguments: str) -> tuple[str, list[str]]:
    """`COPY --from=STAGE SRC... DEST` as (STAGE, [SRC...]); STAGE is "" for the build context."""
    words = shlex.split(arguments)
    stage = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), "")
    paths = [w for w in words if not w.startswith("--")]
    return stage, paths[:-1]


def apt_installed(run: str) -> set[str]:
    """Packages an `apt-get install` in this RUN names (each `&&`-separated command is looked at alone)."""
    packages: set[str] = set()
    for command in run.split("&&"):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            packages.update(word for word in words[2:] if not word.startswith("-"))
    return packages


def env_file(path: Path) -> dict[str, str]:
    entries = [
        line.partition("=") for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]
    return {key: value for key, _, value in entries}


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, object]:
    loaded: dict[str, object] = YAML(typ="safe").load(CHART / "values.yaml")
    return loaded


def test_chart_crd_is_a_copy_of_the_canonical_crd() -> None:
    assert CHART_CRD.read_bytes() == CANONICAL_CRD.read_bytes(), (
        "the chart's CRD differs from crds/helmrelease.yaml: run manifests/sync-crds.sh"
    )


@pytest.mark.parametrize(
    "existing_copy", [b"stale: true\n", None], ids=["replaces-a-stale-copy", "creates-the-copy"]
)
def test_sync_script_copies_the_canonical_crd(tmp_path: Path, existing_copy: bytes | None) -> None:
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "helmrelease.yaml").write_bytes(b"kind: CustomResourceDefinition\n# new field\n")
    chart_crds = tmp_path / "manifests" / "chart" / "helmrelease-operator" / "crds"
    chart_crds.mkdir(parents=True)
    if existing_copy is not None:
        (chart_crds / "helmrelease.yaml").write_bytes(existing_copy)
    shutil.copy(MANIFESTS / "sync-crds.sh", tmp_path / "manifests" / "sync-crds.sh")
    subprocess.run(["sh", str(tmp_path / "manifests" / "sync-crds.sh")], check=True, cwd="/")
    assert (chart_crds / "helmrelease.yaml").read_bytes() == b"kind: CustomResourceDefinition\n# new field\n"


def test_chart_app_version_is_the_package_version() -> None:
    chart = YAML(typ="safe").load(CHART / "Chart.yaml")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert (chart["apiVersion"], chart["name"], chart["appVersion"]) == ("v2", CHART.name, project["version"])


def test_every_top_level_value_is_documented() -> None:
    """Each top-level key sits in a paragraph of values.yaml that starts with a comment."""
    undocumented = []
    paragraph_start = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        if not line.strip():
            paragraph_start = ""
            continue
        paragraph_start = paragraph_start or line
        if line[0].isalpha() and not paragraph_start.startswith("#"):
            undocumented.append(line.split(":")[0])
    assert undocumented == []


def test_dockerfile_stages_build_helm_then_the_package_then_the_runtime(stages: list[Stage]) -> None:
    assert [(s.base.split(":")[0], s.name) for s in stages] == [
        ("golang", "helm"),
        ("python", "python"),
        ("python", None),
    ]
    assert stages[1].base == stages[2].base == "python:3.11-slim", (
        "the virtualenv is copied: same Python on both"
    )


def test_dockerfile_installs_helm_v4_at_the_pinned_version_from_a_build_arg(stages: list[Stage]) -> None:
    helm = stages[0]
    assert helm.all("ARG") == ["HELM_VERSION"], (
        "no default: tools/versions.env is the one place for the version"
    )
    [install] = [run for run in helm.all("RUN") if "go install" in run]
    assert '"helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"' in install
    assert env_file(REPO_ROOT / "tools" / "versions.env")["HELM_VERSION"].startswith("v4.")


def test_dockerfile_runtime_runs_the_cli_as_the_charts_non_root_user(
    stages: list[Stage], values: dict[str, object]
) -> None:
    runtime = stages[-1]
    [user] = runtime.all("USER")
    uid, gid = (int(part) for part in user.split(":"))
    pod = values["podSecurityContext"]
    assert isinstance(pod, dict)
    assert (uid, gid) == (pod["runAsUser"], pod["runAsGroup"])
    assert uid != 0


def test_dockerfile_runs_the_cli_under_tini_so_orphaned_helm_children_are_reaped(stages: list[Stage]) -> None:
    """PID 1 must reap: helmrelease never waits for the children of a helm or git process it killed."""
    runtime = stages[-1]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [entrypoint] = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["tini", "--", next(iter(scripts))]
    assert "tini" in {package for run in runtime.all("RUN") for package in apt_installed(run)}


@pytest.mark.parametrize(
    ("stage_index", "expected"),
    [
        pytest.param(2, ("helm", ["/go/bin/helm"]), id="helm-binary-from-the-go-stage"),
        pytest.param(2, ("python", ["/opt/helmrelease"]), id="virtualenv-from-the-python-stage"),
        pytest.param(1, ("", ["pyproject.toml", "README.md"]), id="project-metadata-from-the-context"),
        pytest.param(1, ("", ["operator"]), id="sources-from-the-context"),
    ],
)
def test_dockerfile_copies(stages: list[Stage], stage_index: int, expected: tuple[str, list[str]]) -> None:
    assert expected in [copy_from(arguments) for arguments in stages[stage_index].all("COPY")]


def test_build_context_keeps_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    """The Dockerfile-specific ignore file excludes everything but what COPY reads from the context."""
    ignore = (MANIFESTS / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore
    kept = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    copies = [copy_from(arguments) for stage in stages for arguments in stage.all("COPY")]
    from_context = {path for source_stage, paths in copies if not source_stage for path in paths}
    assert from_context == kept


def _value(values: dict[str, object], dotted: str) -> object:
    found: object = values
    for key in dotted.split("."):
        assert isinstance(found, dict), dotted
        found = found[key]
    return found


@pytest.mark.parametrize(
    ("value", "argv", "setting"),
    [
        pytest.param("operator.workers", ["run"], "workers", id="workers"),
        pytest.param("operator.resyncIntervalSeconds", ["run"], "resync_interval", id="resync-interval"),
        pytest.param("operator.requireServiceAccount", ["run"], "require_service_account", id="tenancy"),
        pytest.param("operator.metricsPort", ["run"], "metrics_port", id="operator-metrics-port"),
        pytest.param("logLevel", ["run"], "log_level", id="operator-log-level"),
        pytest.param("logLevel", ["image-policy"], "log_level", id="sidecar-log-level"),
        pytest.param("imagePolicy.intervalSeconds", ["image-policy"], "interval", id="interval"),
        pytest.param(
            "imagePolicy.tagRecheckPeriodSeconds", ["image-policy"], "tag_recheck_period", id="recheck-period"
        ),
        pytest.param("imagePolicy.healthPort", ["image-policy"], "health_port", id="health-port"),
        pytest.param("imagePolicy.metricsPort", ["image-policy"], "metrics_port", id="metrics-port"),
        pytest.param(
            "imagePolicy.registry.concurrency", ["image-policy"], "registry_concurrency", id="concurrency"
        ),
        pytest.param("imagePolicy.registry.requestsPerSecond", ["image-policy"], "registry_rps", id="rps"),
        pytest.param(
            "imagePolicy.registry.cacheSize", ["image-policy"], "registry_cache_size", id="cache-size"
        ),
        pytest.param("imagePolicy.webhooks.settleSeconds", ["image-policy"], "webhook_settle", id="settle"),
    ],
)
def test_chart_defaults_are_the_cli_defaults(
    values: dict[str, object], monkeypatch: pytest.MonkeyPatch, value: str, argv: list[str], setting: str
) -> None:
    """The chart passes these as flags: a default changed in the CLI must change in values.yaml too."""
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    args = parse(argv)
    default = getattr(getattr(args, "settings", args), setting)
    assert _value(values, value) == default


@pytest.mark.parametrize(
    ("value", "setting"),
    [
        pytest.param("operator.adoptReleases", "no_adopt", id="adopt"),
        pytest.param("operator.driftDetection", "no_drift_detection", id="drift-detection"),
    ],
)
def test_chart_switches_default_to_the_cli_defaults(
    values: dict[str, object], monkeypatch: pytest.MonkeyPatch, value: str, setting: str
) -> None:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    assert _value(values, value) is not getattr(parse(["run"]).settings, setting)
