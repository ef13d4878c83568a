"""The operator's own chart: lint, what it renders for each setting, and installed RBAC checked by the API server."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from ruamel.yaml import YAML
from tests.support.helmtool import Helm
from tests.support.procs import REPO_ROOT
from tests.support.wait import eventually

from helmrelease.cli import build_parser, parse
from helmrelease.cli.image_policy import git_writeback
from helmrelease.cli.settings import ENV_PREFIX

CHART = REPO_ROOT / "manifests" / "chart" / "helmrelease-operator"
RELEASE = "hro"
FULLNAME = f"{RELEASE}-helmrelease-operator"
IMAGE = "ghcr.io/helmrelease-operator/helmrelease-operator:0.1.0"


def sets(*assignments: str) -> tuple[str, ...]:
    """`helm --set` arguments, one per assignment."""
    return tuple(arg for assignment in assignments for arg in ("--set", assignment))


def set_json(*assignments: str) -> tuple[str, ...]:
    """`helm --set-json` arguments: numbers arrive as float64, as they do from a values file (`--set` makes int64)."""
    return tuple(arg for assignment in assignments for arg in ("--set-json", assignment))


MULTI_TENANT_GIT = sets(
    "watchNamespaces={team-a,team-b}",
    "operator.requireServiceAccount=true",
    "rbac.clusterAdmin=false",
    "imagePolicy.git.url=ssh://git@git.example.com/cluster.git",
    "imagePolicy.git.branch=main",
    "imagePolicy.git.path=releases",
    "imagePolicy.git.author=Image Bot <bot@example.com>",
    "imagePolicy.git.sshKeySecret.name=image-policy-git",
)
NAMESPACED_MULTI_TENANT = sets(
    "watchNamespaces={team-a,team-b}", "operator.requireServiceAccount=true", "rbac.clusterAdmin=false"
)
GIT_WRITE_BACK = MULTI_TENANT_GIT + sets(
    "imagePolicy.git.writebackAll=true",
    "imagePolicy.git.defaultNamespace=apps",
    "imagePolicy.git.knownHosts.configMapName=git-known-hosts",
)
REGISTRY_ACCESS = sets(
    "imagePolicy.registry.caBundles.configMapName=registry-cas",
    "imagePolicy.registry.caBundles.hosts[0].host=registry.internal:5000",
    "imagePolicy.registry.caBundles.hosts[0].key=internal.crt",
    "imagePolicy.registry.caBundles.hosts[1].host=ghcr.example.com",
    "imagePolicy.registry.caBundles.hosts[1].key=ghcr.crt",
    "imagePolicy.registry.dockerConfigSecret=registry-credentials",
    "imagePolicy.registry.insecure={registry.lab:5000}",
    "imagePolicy.platform=linux/arm64/v8",
    "imagePolicy.registry.requestsPerSecond=0.5",
) + set_json(
    "imagePolicy.registry.concurrency=16",
    "imagePolicy.registry.cacheSize=1000000",
    "imagePolicy.intervalSeconds=3600",
)
MONITORED = sets(
    "metrics.service.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "metrics.serviceMonitor.interval=30s",
    "metrics.serviceMonitor.scrapeTimeout=10s",
    "metrics.serviceMonitor.labels.release=prometheus",
)
PEERING = sets("operator.peering.name=ops", "operator.peering.priority=100")
EVERY_OPERATOR_SETTING = sets(
    "operator.workers=8",
    "operator.resyncIntervalSeconds=1000000",
    "operator.adoptReleases=false",
    "operator.driftDetection=false",
    "operator.helmPath=/opt/helm3",
    "operator.defaultGitRef=main",
    "operator.gitSSHKeySecret.name=charts-git",
    "operator.gitKnownHosts.configMapName=charts-git-hosts",
    "operator.insecureRegistries={charts.lab:5000,oci.lab}",
    "operator.extraEnv[0].name=HELMRELEASE_GIT_PROTOCOLS",
    "operator.extraEnv[0].value=https",
    "logFormat=text",
    "logLevel=debug",
    "stateDir.path=/data/helmrelease",
    "imagePolicy.stateDir.path=/data/image-policy",
)

Manifest = dict[str, Any]


def render(helm: Helm, *set_args: str) -> list[Manifest]:
    output = helm.run("template", RELEASE, str(CHART), "--namespace", "flux", *set_args).stdout
    return [doc for doc in YAML(typ="safe").load_all(output) if doc]


def objects(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def pod_spec(manifests: list[Manifest]) -> Manifest:
    [deployment] = objects(manifests, "Deployment")
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def container(manifests: list[Manifest], name: str) -> Manifest:
    found: list[Manifest] = [c for c in pod_spec(manifests)["containers"] if c["name"] == name]
    [spec] = found
    return spec


def args(manifests: list[Manifest], name: str) -> list[str]:
    return list(container(manifests, name)["args"])


def rules(role: Manifest) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples, so rules compare regardless of how they are grouped."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grants(group: str, resource: str, *verbs: str) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for verb in verbs}


WATCHED_NAMESPACE_RULES = (
    grants("helm.fluxcd.io", "helmreleases", "get", "list", "watch", "patch", "update")
    | grants("helm.fluxcd.io", "helmreleases/status", "get", "patch", "update")
    | grants("", "events", "create", "patch")
    | grants("", "configmaps", "get", "list", "watch")
    | grants("", "secrets", "get", "list", "watch", "create", "update", "patch", "delete")
    | grants("", "serviceaccounts", "get")
)
#: With operator.requireServiceAccount helm writes its release storage as each release's ServiceAccount: the
#: operator's own identity only reads Secrets.
TENANT_WATCHED_NAMESPACE_RULES = WATCHED_NAMESPACE_RULES - grants(
    "", "secrets", "create", "update", "patch", "delete"
)
CLUSTER_RULES = grants("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch") | grants(
    "", "namespaces", "get", "list", "watch"
)
IMPERSONATE_SERVICE_ACCOUNTS = grants("", "serviceaccounts", "impersonate")


@pytest.mark.parametrize(
    "set_args",
    [
        pytest.param((), id="defaults"),
        pytest.param(GIT_WRITE_BACK, id="namespaced-multi-tenant-git"),
        pytest.param(REGISTRY_ACCESS, id="registry-access"),
        pytest.param(MONITORED, id="service-monitor"),
    ],
)
def test_chart_lints(helm: Helm, set_args: tuple[str, ...]) -> None:
    helm.run("lint", "--strict", str(CHART), *set_args)


def test_defaults_render_one_pod_with_both_containers_cluster_wide_with_cluster_admin(helm: Helm) -> None:
    manifests = render(helm)
    assert sorted(m["kind"] for m in manifests) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "ServiceAccount",
    ]
    [deployment] = objects(manifests, "Deployment")
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]) == (1, {"type": "Recreate"})
    spec = pod_spec(manifests)
    assert [(c["name"], c["image"]) for c in spec["containers"]] == [
        ("operator", IMAGE),
        ("image-policy", IMAGE),
    ]
    assert all("command" not in c for c in spec["containers"]), "the image's entrypoint is `helmrelease`"
    assert args(manifests, "operator") == [
        "run",
        "--workers=4",
        "--resync-interval=300",
        "--state-dir=/var/lib/helmrelease",
        "--log-format=json",
        "--log-level=INFO",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9091",
        "--standalone",
    ]
    assert args(manifests, "image-policy") == [
        "image-policy",
        "--interval=300",
        "--tag-recheck-period=86400",
        "--state-dir=/var/lib/helmrelease-image-policy",
        "--log-format=json",
        "--log-level=INFO",
        "--health-port=8081",
        "--metrics-port=9090",
        "--registry-concurrency=4",
        "--registry-rps=10",
        "--registry-cache-size=100000",
    ]
    [cluster_role] = objects(manifests, "ClusterRole")
    assert rules(cluster_role) == WATCHED_NAMESPACE_RULES | CLUSTER_RULES
    bound = {b["roleRef"]["name"]: b["subjects"] for b in objects(manifests, "ClusterRoleBinding")}
    subject = [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": "flux"}]
    assert bound == {cluster_role["metadata"]["name"]: subject, "cluster-admin": subject}


def test_probes_hit_the_ports_the_containers_serve_on(helm: Helm) -> None:
    manifests = render(helm, *sets("operator.livenessPort=18080", "imagePolicy.healthPort=18081"))
    probed = {}
    for name in ("operator", "image-policy"):
        spec = container(manifests, name)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in spec:
                probed[name, probe] = (spec[probe]["httpGet"]["path"], ports[spec[probe]["httpGet"]["port"]])
    assert probed == {
        ("operator", "livenessProbe"): ("/healthz", 18080),
        ("image-policy", "livenessProbe"): ("/healthz", 18081),
        ("image-policy", "readinessProbe"): ("/healthz", 18081),
    }
    assert "--liveness=http://0.0.0.0:18080/healthz" in args(manifests, "operator")
    assert "--health-port=18081" in args(manifests, "image-policy")


def test_pod_runs_non_root_on_a_read_only_root_with_emptydirs_for_writable_paths(helm: Helm) -> None:
    manifests = render(helm)
    spec = pod_spec(manifests)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for name in ("operator", "image-policy"):
        security = container(manifests, name)["securityContext"]
        assert security == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        mounted = {
            m["mountPath"] for m in container(manifests, name)["volumeMounts"] if m["name"] in empty_dirs
        }
        assert "/tmp" in mounted
    writable = {
        name: {m["mountPath"] for m in container(manifests, name)["volumeMounts"] if m["name"] in empty_dirs}
        for name in ("operator", "image-policy")
    }
    assert "/var/lib/helmrelease" in writable["operator"]
    assert "/var/lib/helmrelease-image-policy" in writable["image-policy"], "the sidecar's --state-dir"
    env = {e["name"]: e.get("value") for e in container(manifests, "operator")["env"]}
    assert env["HOME"] == "/var/lib/helmrelease", "helm writes its caches under $HOME"


@pytest.mark.parametrize(
    ("set_args", "expected"),
    [
        pytest.param(
            sets("watchNamespaces={team-a,team-b,team-a}"),
            {
                "operator": ["--namespace=team-a", "--namespace=team-b"],
                "image-policy": ["--namespace=team-a", "--namespace=team-b"],
            },
            id="watched-namespaces-to-both-once-each",
        ),
        pytest.param(sets("operator.workers=8"), {"operator": ["--workers=8"]}, id="workers"),
        pytest.param(
            sets("operator.resyncIntervalSeconds=1000000"),
            {"operator": ["--resync-interval=1000000"]},
            id="resync-interval-as-integer",
        ),
        pytest.param(
            sets("logFormat=text"),
            {"operator": ["--log-format=text"], "image-policy": ["--log-format=text"]},
            id="log-format-to-both",
        ),
        pytest.param(
            sets("logLevel=debug"),
            {"operator": ["--log-level=DEBUG"], "image-policy": ["--log-level=DEBUG"]},
            id="log-level-to-both",
        ),
        pytest.param(
            sets("imagePolicy.stateDir.path=/data/image-policy"),
            {"image-policy": ["--state-dir=/data/image-policy"]},
            id="sidecar-state-dir",
        ),
        pytest.param(
            sets("imagePolicy.registry.concurrency=16", "imagePolicy.registry.requestsPerSecond=0.5")
            + set_json("imagePolicy.registry.cacheSize=1000000"),
            {
                "image-policy": [
                    "--registry-concurrency=16",
                    "--registry-rps=0.5",
                    "--registry-cache-size=1000000",
                ]
            },
            id="registry-limits-as-numbers",
        ),
        pytest.param(
            sets("operator.requireServiceAccount=true"),
            {"operator": ["--require-service-account"]},
            id="multi-tenancy",
        ),
        pytest.param(sets("operator.adoptReleases=false"), {"operator": ["--no-adopt"]}, id="no-adopt"),
        pytest.param(
            sets("operator.driftDetection=false"), {"operator": ["--no-drift-detection"]}, id="no-drift"
        ),
        pytest.param(sets("operator.helmPath=/opt/helm3"), {"operator": ["--helm=/opt/helm3"]}, id="helm"),
        pytest.param(
            sets("operator.defaultGitRef=main"), {"operator": ["--default-git-ref=main"]}, id="git-ref"
        ),
        pytest.param(
            sets("operator.gitSSHKeySecret.name=charts-git"),
            {"operator": ["--git-ssh-key=/etc/helmrelease/chart-git/identity"]},
            id="chart-git-ssh-key",
        ),
        pytest.param(
            sets("operator.gitKnownHosts.configMapName=charts-git-hosts"),
            {"operator": ["--git-known-hosts=/etc/helmrelease/chart-git-known-hosts/known_hosts"]},
            id="chart-git-known-hosts",
        ),
        pytest.param(
            sets("operator.insecureRegistries={charts.lab:5000,oci.lab}"),
            {"operator": ["--insecure-registry=charts.lab:5000", "--insecure-registry=oci.lab"]},
            id="chart-insecure-registries",
        ),
        pytest.param(
            sets("operator.peering.name=ops", "operator.peering.priority=100"),
            {"operator": ["--peering=ops", "--priority=100"]},
            id="peering-with-priority",
        ),
        pytest.param(sets("operator.peering.priority=100"), {}, id="priority-only-matters-with-peering"),
        pytest.param(
            sets("operator.extraArgs={--git-protocols=https}", "imagePolicy.extraArgs={--once}"),
            {"operator": ["--git-protocols=https"], "image-policy": ["--once"]},
            id="extra-args",
        ),
        pytest.param(sets("imagePolicy.intervalSeconds=60"), {"image-policy": ["--interval=60"]}, id="scan"),
        pytest.param(
            sets("imagePolicy.platform=linux/arm64"),
            {"image-policy": ["--platform=linux/arm64"]},
            id="platform",
        ),
        pytest.param(
            sets("imagePolicy.registry.insecure={registry.lab:5000}"),
            {"image-policy": ["--insecure-registry=registry.lab:5000"]},
            id="image-insecure-registries",
        ),
        pytest.param(
            sets(
                "imagePolicy.registry.caBundles.configMapName=registry-cas",
                "imagePolicy.registry.caBundles.hosts[0].host=registry.internal:5000",
                "imagePolicy.registry.caBundles.hosts[0].key=internal.crt",
            ),
            {
                "image-policy": [
                    "--registry-ca=registry.internal:5000=/etc/helmrelease/registry-ca/internal.crt"
                ]
            },
            id="registry-ca",
        ),
        pytest.param(
            sets("imagePolicy.registry.dockerConfigSecret=registry-credentials"),
            {"image-policy": ["--docker-config=/etc/helmrelease/docker/config.json"]},
            id="docker-config",
        ),
        pytest.param(
            MULTI_TENANT_GIT,
            {
                "operator": ["--namespace=team-a", "--namespace=team-b", "--require-service-account"],
                "image-policy": [
                    "--namespace=team-a",
                    "--namespace=team-b",
                    "--git-url=ssh://git@git.example.com/cluster.git",
                    "--git-branch=main",
                    "--git-path=releases",
                    "--git-author=Image Bot <bot@example.com>",
                    "--git-ssh-key=/etc/helmrelease/git/identity",
                ],
            },
            id="git-write-back",
        ),
        pytest.param(
            GIT_WRITE_BACK,
            {
                "operator": ["--namespace=team-a", "--namespace=team-b", "--require-service-account"],
                "image-policy": [
                    "--namespace=team-a",
                    "--namespace=team-b",
                    "--git-url=ssh://git@git.example.com/cluster.git",
                    "--git-branch=main",
                    "--git-path=releases",
                    "--git-author=Image Bot <bot@example.com>",
                    "--git-ssh-key=/etc/helmrelease/git/identity",
                    "--git-known-hosts=/etc/helmrelease/git-known-hosts/known_hosts",
                    "--git-writeback-all",
                    "--git-default-namespace=apps",
                ],
            },
            id="git-write-back-every-setting",
        ),
        pytest.param(
            sets(
                "imagePolicy.webhooks.enabled=true",
                "imagePolicy.webhooks.tokenSecret.name=registry-hooks",
                "imagePolicy.webhooks.port=9393",
                "imagePolicy.webhooks.settleSeconds=0.5",
            ),
            {
                "image-policy": [
                    "--webhook-port=9393",
                    "--webhook-token-file=/etc/helmrelease/webhook/token",
                    "--webhook-settle=0.5",
                ]
            },
            id="webhooks",
        ),
    ],
)
def test_values_become_flags(helm: Helm, set_args: tuple[str, ...], expected: dict[str, list[str]]) -> None:
    """Each setting adds exactly its flags, in order, to the container it configures."""
    defaults = render(helm)
    manifests = render(helm, *set_args)
    for name in ("operator", "image-policy"):
        added = [arg for arg in args(manifests, name) if arg not in args(defaults, name)]
        assert added == expected.get(name, []), name


@pytest.mark.parametrize(
    ("set_args", "removed"),
    [
        pytest.param(
            sets("operator.peering.name=ops"),
            {"operator": ["--standalone"]},
            id="peering-not-standalone",
        ),
        pytest.param(sets("imagePolicy.enabled=false"), {"image-policy": None}, id="no-sidecar"),
    ],
)
def test_values_that_remove_defaults(
    helm: Helm, set_args: tuple[str, ...], removed: dict[str, list[str] | None]
) -> None:
    manifests = render(helm, *set_args)
    names = [c["name"] for c in pod_spec(manifests)["containers"]]
    for name, flags in removed.items():
        if flags is None:
            assert name not in names
        else:
            assert not set(flags) & set(args(manifests, name))


WEBHOOKS = sets("imagePolicy.webhooks.enabled=true", "imagePolicy.webhooks.tokenSecret.name=registry-hooks")


# --- The real `helmrelease` parser accepts what the chart renders. ---

#: The subcommand each container runs.
CONTAINER_COMMANDS = {"operator": "run", "image-policy": "image-policy"}


def environment_read_by(subcommand: str) -> frozenset[str]:
    """The HELMRELEASE_* variables a subcommand reads: those of its settings model (the sidecar has none)."""
    model = getattr(build_parser().parse_args([subcommand]), "settings_model", None)
    return frozenset(model.variables().values()) if model is not None else frozenset()


def cli_argv(spec: Manifest) -> list[str]:
    """The container's arguments to `helmrelease`: the image's entrypoint is `tini -- helmrelease`, so without a
    `command` they are its `args`; with one, whatever follows the `helmrelease` executable in it."""
    command = list(spec.get("command", []))
    if not command:
        return list(spec["args"])
    starts = [i for i, word in enumerate(command) if word.rpartition("/")[2] == "helmrelease"]
    assert starts, f"container {spec['name']} does not run helmrelease: {command}"
    return [*command[starts[0] + 1 :], *spec.get("args", [])]


def check_against_cli(spec: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail unless the real CLI starts this container as the chart means it to: the right subcommand, flags its
    parser accepts, only HELMRELEASE_* variables it reads with values its settings accept and that no flag of the
    chart overrides, a log level logging knows, and (sidecar) git flags that pass the sidecar's start-up check."""
    subcommand = CONTAINER_COMMANDS[spec["name"]]
    argv = cli_argv(spec)
    environment = {
        e["name"]: e.get("value", "") for e in spec.get("env", []) if e["name"].startswith(ENV_PREFIX)
    }
    unread = sorted(set(environment) - environment_read_by(subcommand))
    if unread:
        pytest.fail(f"container {spec['name']} sets {unread}, not read by helmrelease {subcommand}")
    # The settings are read from the container's environment, not the test's.
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed: argparse.Namespace = parse(argv)
    except SystemExit:
        pytest.fail(f"helmrelease refuses the {spec['name']} container's {argv}:\n{errors.getvalue()}")
    assert parsed.command == subcommand, spec["name"]
    if hasattr(parsed, "settings"):
        model = parsed.settings_model
        shadowed = sorted(set(environment) & {model.variable(name) for name in model.given(parsed)})
        if shadowed:
            pytest.fail(f"container {spec['name']} sets {shadowed}, which its flags override")
    assert parsed.log_level.upper() in logging.getLevelNamesMapping(), parsed.log_level
    if subcommand == "image-policy":
        git_writeback(parsed)


@pytest.mark.parametrize(
    "set_args",
    [
        pytest.param((), id="defaults"),
        pytest.param(NAMESPACED_MULTI_TENANT, id="namespaced-multi-tenant"),
        pytest.param(GIT_WRITE_BACK, id="namespaced-multi-tenant-git-write-back"),
        pytest.param(REGISTRY_ACCESS, id="registry-ca-docker-config-limits"),
        pytest.param(PEERING, id="peering"),
        pytest.param(PEERING + NAMESPACED_MULTI_TENANT, id="namespaced-peering"),
        pytest.param(EVERY_OPERATOR_SETTING, id="every-operator-setting"),
        pytest.param(WEBHOOKS, id="webhooks"),
    ],
)
def test_the_cli_accepts_every_container_the_chart_renders(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, set_args: tuple[str, ...]
) -> None:
    containers = pod_spec(render(helm, *set_args))["containers"]
    assert [c["name"] for c in containers] == list(CONTAINER_COMMANDS)
    for spec in containers:
        check_against_cli(spec, monkeypatch)


@pytest.mark.parametrize(
    ("set_args", "container_name", "message"),
    [
        pytest.param(
            sets("operator.extraArgs={--verbose}"),
            "operator",
            "unrecognized arguments: --verbose",
            id="unknown-operator-flag",
        ),
        pytest.param(
            sets("imagePolicy.extraArgs={--workers=2}"),
            "image-policy",
            "unrecognized arguments: --workers=2",
            id="operator-flag-on-the-sidecar",
        ),
        pytest.param(
            sets("operator.extraArgs={--workers=0}"),
            "operator",
            "must be a positive integer",
            id="flag-value-the-parser-refuses",
        ),
        pytest.param(
            sets("imagePolicy.extraEnv[0].name=HELMRELEASE_LOG_LEVEL", "imagePolicy.extraEnv[0].value=DEBUG"),
            "image-policy",
            "not read by helmrelease image-policy",
            id="variable-the-sidecar-does-not-read",
        ),
        pytest.param(
            sets("operator.extraEnv[0].name=HELMRELEASE_GIT_PROTOCOLS", "operator.extraEnv[0].value=ext"),
            "operator",
            "helmrelease: error: HELMRELEASE_GIT_PROTOCOLS: must be a comma-separated list of",
            id="variable-value-the-settings-refuse",
        ),
        pytest.param(
            sets("operator.extraEnv[0].name=HELMRELEASE_LOG_LEVEL", "operator.extraEnv[0].value=DEBUG"),
            "operator",
            "sets ['HELMRELEASE_LOG_LEVEL'], which its flags override",
            id="variable-the-chart-flags-override",
        ),
        pytest.param(
            sets("imagePolicy.extraArgs={--git-writeback-all}"),
            "image-policy",
            "the --git-* flags need --git-url",
            id="git-flag-without-url",
        ),
    ],
)
def test_the_cli_check_catches_what_the_cli_would_refuse(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, set_args: tuple[str, ...], container_name: str, message: str
) -> None:
    """The check above can fail: extra arguments pass through the chart unchecked, so they show it."""
    spec = container(render(helm, *set_args), container_name)
    with pytest.raises((pytest.fail.Exception, ValueError), match=re.escape(message)):
        check_against_cli(spec, monkeypatch)


def test_every_mounted_file_a_flag_names_comes_from_the_configured_object(helm: Helm) -> None:
    manifests = render(
        helm,
        *GIT_WRITE_BACK,
        *WEBHOOKS,
        *sets(
            "operator.gitSSHKeySecret.name=charts-git",
            "operator.gitKnownHosts.configMapName=charts-git-hosts",
            "imagePolicy.registry.dockerConfigSecret=registry-credentials",
            "imagePolicy.registry.caBundles.configMapName=registry-cas",
            "imagePolicy.registry.caBundles.hosts[0].host=registry.internal:5000",
            "imagePolicy.registry.caBundles.hosts[0].key=internal.crt",
        ),
    )
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for name in ("operator", "image-policy"):
        mounts = container(manifests, name)["volumeMounts"]
        for flag, _, value in (arg.partition("=") for arg in args(manifests, name)):
            path = value.rpartition("=")[2]
            if not path.startswith("/etc/helmrelease/"):
                continue
            [mount] = [m for m in mounts if path.startswith(m["mountPath"] + "/")]
            assert mount.get("readOnly") is True
            file_name = path.removeprefix(mount["mountPath"] + "/")
            volume = volumes[mount["name"]]
            if "secret" in volume:
                [key] = [i["key"] for i in volume["secret"]["items"] if i["path"] == file_name]
                found[name, flag] = (volume["secret"]["secretName"], key)
            else:
                found[name, flag] = (volume["configMap"]["name"], file_name)
    assert found == {
        ("operator", "--git-ssh-key"): ("charts-git", "identity"),
        ("operator", "--git-known-hosts"): ("charts-git-hosts", "known_hosts"),
        ("image-policy", "--git-ssh-key"): ("image-policy-git", "identity"),
        ("image-policy", "--git-known-hosts"): ("git-known-hosts", "known_hosts"),
        ("image-policy", "--docker-config"): ("registry-credentials", ".dockerconfigjson"),
        ("image-policy", "--registry-ca"): ("registry-cas", "internal.crt"),
        ("image-policy", "--webhook-token-file"): ("registry-hooks", "token"),
    }


def test_namespaced_multi_tenant_rbac_is_per_namespace_with_service_account_impersonation_only(
    helm: Helm,
) -> None:
    manifests = render(helm, *MULTI_TENANT_GIT)
    roles = {r["metadata"]["namespace"]: rules(r) for r in objects(manifests, "Role")}
    assert roles == {
        "team-a": TENANT_WATCHED_NAMESPACE_RULES | IMPERSONATE_SERVICE_ACCOUNTS,
        "team-b": TENANT_WATCHED_NAMESPACE_RULES | IMPERSONATE_SERVICE_ACCOUNTS,
    }
    bindings = {
        b["metadata"]["namespace"]: (b["roleRef"], b["subjects"]) for b in objects(manifests, "RoleBinding")
    }
    subject = [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": "flux"}]
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
    assert bindings == {"team-a": (role_ref, subject), "team-b": (role_ref, subject)}
    [cluster_role] = objects(manifests, "ClusterRole")
    assert rules(cluster_role) == CLUSTER_RULES
    assert [b["roleRef"]["name"] for b in objects(manifests, "ClusterRoleBinding")] == [
        cluster_role["metadata"]["name"]
    ]


#: What `helmrelease image-policy` does through adapters.kube: list and read HelmReleases (cluster-wide or per
#: namespace), JSON-patch their tags, post Events, read pull Secrets and the ServiceAccounts naming them.
SIDECAR_RULES = (
    grants("helm.fluxcd.io", "helmreleases", "get", "list", "watch", "patch")
    | grants("", "events", "create", "patch")
    | grants("", "secrets", "get")
    | grants("", "serviceaccounts", "get")
)


@pytest.mark.parametrize(
    ("set_args", "kind", "namespaces"),
    [
        pytest.param((), "ClusterRole", [None], id="cluster-wide"),
        pytest.param(sets("watchNamespaces={team-a}"), "Role", ["team-a"], id="namespaced"),
        pytest.param(
            NAMESPACED_MULTI_TENANT,
            "Role",
            ["team-a", "team-b"],
            id="namespaced-multi-tenant-least-privilege",
        ),
    ],
)
def test_the_sidecar_is_granted_what_it_does_wherever_it_scans(
    helm: Helm, set_args: tuple[str, ...], kind: str, namespaces: list[str | None]
) -> None:
    missing = {
        role["metadata"].get("namespace"): SIDECAR_RULES - rules(role)
        for role in objects(render(helm, *set_args), kind)
    }
    assert missing == {namespace: set() for namespace in namespaces}


#: With peering, a replica claims a release with a Lease in its namespace while it runs Helm on it.
LEASES = grants("coordination.k8s.io", "leases", "get", "create", "update", "delete")


@pytest.mark.parametrize(
    ("set_args", "cluster_extra", "namespace_extra"),
    [
        pytest.param(
            sets("operator.peering.name=ops"),
            grants("kopf.dev", "clusterkopfpeerings", "get", "list", "watch", "patch") | LEASES,
            None,
            id="cluster-peering",
        ),
        pytest.param(
            sets("operator.peering.name=ops", "watchNamespaces={team-a}"),
            set(),
            grants("kopf.dev", "kopfpeerings", "get", "list", "watch", "patch") | LEASES,
            id="namespaced-peering",
        ),
        pytest.param(
            sets("rbac.impersonation.usersAndGroups=true"),
            IMPERSONATE_SERVICE_ACCOUNTS
            | grants("", "users", "impersonate")
            | grants("", "groups", "impersonate"),
            None,
            id="impersonate-users-and-groups",
        ),
        pytest.param(
            sets("rbac.impersonation.enabled=true"),
            IMPERSONATE_SERVICE_ACCOUNTS,
            None,
            id="impersonation",
        ),
    ],
)
def test_optional_rules(
    helm: Helm,
    set_args: tuple[str, ...],
    cluster_extra: set[tuple[str, str, str]],
    namespace_extra: set[tuple[str, str, str]] | None,
) -> None:
    manifests = render(helm, *set_args)
    [cluster_role] = objects(manifests, "ClusterRole")
    if namespace_extra is None:
        assert rules(cluster_role) == WATCHED_NAMESPACE_RULES | CLUSTER_RULES | cluster_extra
    else:
        [role] = objects(manifests, "Role")
        assert rules(role) == WATCHED_NAMESPACE_RULES | namespace_extra
        assert rules(cluster_role) == CLUSTER_RULES | cluster_extra


@pytest.mark.parametrize(
    ("set_args", "peerings"),
    [
        pytest.param(sets("operator.peering.name=ops"), [("ClusterKopfPeering", None)], id="cluster"),
        pytest.param(
            sets("operator.peering.name=ops", "watchNamespaces={team-a,team-b}"),
            [("KopfPeering", "team-a"), ("KopfPeering", "team-b")],
            id="namespaced",
        ),
        pytest.param((), [], id="standalone"),
    ],
)
def test_peering_objects_kopf_requires(
    helm: Helm, set_args: tuple[str, ...], peerings: list[tuple[str, str | None]]
) -> None:
    manifests = render(helm, *set_args)
    found = [
        (m["kind"], m["metadata"].get("namespace"))
        for m in manifests
        if m["apiVersion"] == "kopf.dev/v1" and m["metadata"]["name"] == "ops"
    ]
    assert found == peerings


def test_shards_render_one_deployment_each_beside_the_unsharded_one(helm: Helm) -> None:
    manifests = render(helm, *sets("shards={a,b}"))
    deployments = {d["metadata"]["name"]: d for d in objects(manifests, "Deployment")}
    assert list(deployments) == [FULLNAME, f"{FULLNAME}-a", f"{FULLNAME}-b"]
    selectors = {name: d["spec"]["selector"]["matchLabels"] for name, d in deployments.items()}
    unsharded = {"app.kubernetes.io/name": "helmrelease-operator", "app.kubernetes.io/instance": RELEASE}
    assert selectors == {
        FULLNAME: unsharded,
        f"{FULLNAME}-a": {**unsharded, "helmrelease.helm.fluxcd.io/shard": "a"},
        f"{FULLNAME}-b": {**unsharded, "helmrelease.helm.fluxcd.io/shard": "b"},
    }
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        assert selectors[name].items() <= pod["metadata"]["labels"].items()
        shard = [f"--shard={name.removeprefix(FULLNAME + '-')}"] if name != FULLNAME else []
        for spec in pod["spec"]["containers"]:
            assert [arg for arg in spec["args"] if arg.startswith("--shard")] == shard, (name, spec["name"])
    # The unsharded Deployment renders exactly as without shards (its selector cannot change on upgrade).
    assert deployments[FULLNAME] == objects(render(helm), "Deployment")[0]


def test_the_cli_accepts_every_container_of_every_shard(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    for deployment in objects(render(helm, *PEERING, *sets("shards={a,b}")), "Deployment"):
        for spec in deployment["spec"]["template"]["spec"]["containers"]:
            check_against_cli(spec, monkeypatch)


@pytest.mark.parametrize(
    ("set_args", "expected"),
    [
        pytest.param(
            sets("shards={a,b}"),
            [
                ("ClusterKopfPeering", "ops", None),
                ("ClusterKopfPeering", "ops-a", None),
                ("ClusterKopfPeering", "ops-b", None),
            ],
            id="cluster",
        ),
        pytest.param(
            sets("shards={a}", "watchNamespaces={team-a}"),
            [("KopfPeering", "ops", "team-a"), ("KopfPeering", "ops-a", "team-a")],
            id="namespaced",
        ),
    ],
)
def test_each_shard_peers_under_its_own_name(
    helm: Helm, set_args: tuple[str, ...], expected: list[tuple[str, str, str | None]]
) -> None:
    manifests = render(helm, *sets("operator.peering.name=ops"), *set_args)
    found = [
        (m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
        for m in manifests
        if m["apiVersion"] == "kopf.dev/v1"
    ]
    assert found == expected
    # What the operator of each shard will look for: --peering=ops plus its --shard.
    for deployment in objects(manifests, "Deployment"):
        [operator] = [
            c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
        ]
        settings = parse(operator["args"]).settings
        peering = settings.peering if settings.shard is None else f"{settings.peering}-{settings.shard}"
        assert peering in {name for _, name, _ in found}


def served_ports(manifests: list[Manifest]) -> dict[str, tuple[str, int]]:
    """Each Service port by name: the container whose named port it targets, and that port's number."""
    [service] = objects(manifests, "Service")
    [deployment] = objects(manifests, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    by_name = {
        port["name"]: (c["name"], port["containerPort"])
        for c in pod_spec(manifests)["containers"]
        for port in c.get("ports", [])
    }
    return {port["name"]: by_name[port["targetPort"]] for port in service["spec"]["ports"]}


@pytest.mark.parametrize(
    ("set_args", "expected"),
    [
        pytest.param(
            (),
            {"operator-metrics": ("operator", 9091), "metrics": ("image-policy", 9090)},
            id="both-containers",
        ),
        pytest.param(
            sets("imagePolicy.enabled=false"), {"operator-metrics": ("operator", 9091)}, id="without-sidecar"
        ),
        pytest.param(
            sets("operator.metricsPort=0"), {"metrics": ("image-policy", 9090)}, id="operator-metrics-off"
        ),
        pytest.param(
            sets("operator.metricsPort=19091", "imagePolicy.metricsPort=19090"),
            {"operator-metrics": ("operator", 19091), "metrics": ("image-policy", 19090)},
            id="other-ports",
        ),
    ],
)
def test_the_metrics_service_targets_the_ports_the_containers_serve_metrics_on(
    helm: Helm, set_args: tuple[str, ...], expected: dict[str, tuple[str, int]]
) -> None:
    manifests = render(helm, *sets("metrics.service.enabled=true"), *set_args)
    assert served_ports(manifests) == expected
    served = {name: port for name, (_, port) in expected.items()}
    operator_port = served.get("operator-metrics", 0)
    assert f"--metrics-port={operator_port}" in args(manifests, "operator")
    if "metrics" in served:
        assert f"--metrics-port={served['metrics']}" in args(manifests, "image-policy")
    assert not objects(manifests, "ServiceMonitor"), "off unless asked for"


def test_the_service_monitor_scrapes_every_port_of_the_metrics_service(helm: Helm) -> None:
    manifests = render(helm, *MONITORED)
    [service] = objects(manifests, "Service")
    [monitor] = objects(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    [deployment] = objects(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= pod_labels.items(), (
        "it selects the metrics Service, not any Service of the Pods"
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["flux"]}
    assert monitor["spec"]["endpoints"] == [
        {"port": port["name"], "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
        for port in service["spec"]["ports"]
    ]
    assert [port["name"] for port in service["spec"]["ports"]] == ["operator-metrics", "metrics"]


def test_webhooks_are_off_by_default(helm: Helm) -> None:
    manifests = render(helm)
    assert not [arg for arg in args(manifests, "image-policy") if arg.startswith("--webhook")]
    assert "webhooks" not in {p["name"] for p in container(manifests, "image-policy")["ports"]}
    assert objects(manifests, "Service") == []


def test_the_webhook_service_targets_the_sidecar_webhook_port(helm: Helm) -> None:
    manifests = render(helm, *WEBHOOKS)
    [service] = objects(manifests, "Service")
    assert service["metadata"]["name"].endswith("-webhooks")
    [port] = service["spec"]["ports"]
    [deployment] = objects(manifests, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in container(manifests, "image-policy")["ports"]}
    assert (port["port"], port["targetPort"], ports[port["targetPort"]]) == (9292, "webhooks", 9292)
    no_service = render(helm, *WEBHOOKS, *sets("imagePolicy.webhooks.service.enabled=false"))
    assert objects(no_service, "Service") == []
    assert "--webhook-port=9292" in args(no_service, "image-policy")


@pytest.mark.parametrize(
    ("set_args", "message"),
    [
        pytest.param(sets("replicaCount=2"), "replicaCount must be 0 or 1", id="two-replicas"),
        pytest.param(
            sets("imagePolicy.webhooks.enabled=true"),
            "needs imagePolicy.webhooks.tokenSecret.name: webhooks are never served unauthenticated",
            id="webhooks-without-token",
        ),
        pytest.param(
            (*WEBHOOKS, *sets("imagePolicy.enabled=false")),
            "imagePolicy.webhooks.enabled serves the image-policy sidecar's webhooks: it needs imagePolicy.enabled",
            id="webhooks-without-sidecar",
        ),
        pytest.param(sets("logFormat=xml"), "logFormat must be text or json", id="log-format"),
        pytest.param(sets("logLevel=verbose"), "logLevel must be DEBUG, INFO", id="log-level"),
        pytest.param(
            sets("imagePolicy.git.writebackAll=true"),
            "the imagePolicy.git settings need imagePolicy.git.url",
            id="git-write-back-all-without-url",
        ),
        pytest.param(
            sets("imagePolicy.git.knownHosts.configMapName=git-known-hosts"),
            "the imagePolicy.git settings need imagePolicy.git.url",
            id="git-known-hosts-without-url",
        ),
        pytest.param(
            sets(
                "imagePolicy.registry.caBundles.hosts[0].host=r",
                "imagePolicy.registry.caBundles.hosts[0].key=k",
            ),
            "needs imagePolicy.registry.caBundles.configMapName",
            id="ca-without-configmap",
        ),
        pytest.param(
            sets("metrics.service.enabled=true", "imagePolicy.enabled=false", "operator.metricsPort=0"),
            "metrics.service.enabled needs metrics to serve",
            id="metrics-service-without-metrics",
        ),
        pytest.param(
            sets("metrics.serviceMonitor.enabled=true"),
            "it needs metrics.service.enabled",
            id="service-monitor-without-service",
        ),
        pytest.param(
            sets("serviceAccount.create=false"),
            "serviceAccount.name is required",
            id="no-service-account",
        ),
        pytest.param(sets("shards={a,Team_B}"), "shards: Team_B is not a shard name", id="bad-shard-name"),
        pytest.param(sets("shards={a,b,a}"), "shards: each name once", id="shard-twice"),
    ],
)
def test_values_that_cannot_work_are_refused(helm: Helm, set_args: tuple[str, ...], message: str) -> None:
    result = helm.run("template", RELEASE, str(CHART), *set_args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


# --- Installed into the control plane: the API server's own authorizer judges the RBAC. ---


@dataclass(frozen=True)
class Access:
    """A request the operator might make; namespace WATCHED/OTHER are placeholders, None is cluster-wide."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str | None = None
    name: str = ""


WATCHED, OTHER = "<watched>", "<other>"

PATCH_STATUS = Access("patch", "helmreleases", "helm.fluxcd.io", "status", WATCHED)
COMMON_CHECKS = {
    "patch helmreleases/status": (PATCH_STATUS, True),
    "create events": (Access("create", "events", namespace=WATCHED), True),
    "list secrets": (Access("list", "secrets", namespace=WATCHED), True),
    "delete helm storage secrets": (Access("delete", "secrets", namespace=WATCHED), True),
    "watch CRDs (kopf)": (Access("watch", "customresourcedefinitions", "apiextensions.k8s.io"), True),
    "list namespaces": (Access("list", "namespaces"), True),
    "get serviceaccounts": (Access("get", "serviceaccounts", namespace=WATCHED), True),
}
#: What the operator's identity may not do with Secrets when helm runs as each release's ServiceAccount.
TENANT_SECRET_CHECKS = {
    "delete helm storage secrets": (Access("delete", "secrets", namespace=WATCHED), False),
    "create secrets": (Access("create", "secrets", namespace=WATCHED), False),
    "patch secrets": (Access("patch", "secrets", namespace=WATCHED), False),
}
LEAST_PRIVILEGE_CHECKS = {
    "delete namespaces": (Access("delete", "namespaces", name="kube-system"), False),
    "create deployments": (Access("create", "deployments", "apps", namespace=WATCHED), False),
    "create pods": (Access("create", "pods", namespace=WATCHED), False),
    "delete helmreleases": (Access("delete", "helmreleases", "helm.fluxcd.io", namespace=WATCHED), False),
    "create CRDs": (Access("create", "customresourcedefinitions", "apiextensions.k8s.io"), False),
    "update configmaps": (Access("update", "configmaps", namespace=WATCHED), False),
    "impersonate users": (Access("impersonate", "users", name="admin"), False),
    "impersonate groups": (Access("impersonate", "groups", name="system:masters"), False),
    "bind clusterroles": (
        Access("bind", "clusterroles", "rbac.authorization.k8s.io", name="cluster-admin"),
        False,
    ),
}
SCENARIOS = [
    pytest.param(
        sets("rbac.clusterAdmin=false", "operator.requireServiceAccount=true"),
        COMMON_CHECKS
        | LEAST_PRIVILEGE_CHECKS
        | TENANT_SECRET_CHECKS
        | {
            "watch helmreleases in all namespaces": (Access("watch", "helmreleases", "helm.fluxcd.io"), True),
            "patch helmreleases/status elsewhere": (
                Access("patch", "helmreleases", "helm.fluxcd.io", "status", OTHER),
                True,
            ),
            "impersonate a tenant ServiceAccount": (
                Access("impersonate", "serviceaccounts", namespace=OTHER, name="deployer"),
                True,
            ),
        },
        id="cluster-wide-multi-tenant",
    ),
    pytest.param(
        sets(
            "rbac.clusterAdmin=false", "operator.requireServiceAccount=true", f"watchNamespaces={{{WATCHED}}}"
        ),
        COMMON_CHECKS
        | LEAST_PRIVILEGE_CHECKS
        | TENANT_SECRET_CHECKS
        | {
            "impersonate a ServiceAccount of the watched namespace": (
                Access("impersonate", "serviceaccounts", namespace=WATCHED, name="deployer"),
                True,
            ),
            "impersonate a ServiceAccount elsewhere": (
                Access("impersonate", "serviceaccounts", namespace=OTHER, name="deployer"),
                False,
            ),
            "patch helmreleases/status elsewhere": (
                Access("patch", "helmreleases", "helm.fluxcd.io", "status", OTHER),
                False,
            ),
            "list secrets elsewhere": (Access("list", "secrets", namespace=OTHER), False),
            "watch helmreleases in all namespaces": (
                Access("watch", "helmreleases", "helm.fluxcd.io"),
                False,
            ),
        },
        id="namespaced-multi-tenant",
    ),
    pytest.param(
        sets("rbac.clusterAdmin=false"),
        COMMON_CHECKS
        | LEAST_PRIVILEGE_CHECKS
        | {
            "impersonate a ServiceAccount": (
                Access("impersonate", "serviceaccounts", namespace=OTHER, name="deployer"),
                False,
            )
        },
        id="least-privilege-without-impersonation",
    ),
    pytest.param(
        (),
        COMMON_CHECKS
        | {
            "create deployments anywhere": (
                Access("create", "deployments", "apps", namespace="kube-system"),
                True,
            ),
            "create CRDs": (Access("create", "customresourcedefinitions", "apiextensions.k8s.io"), True),
            "create clusterroles": (Access("create", "clusterroles", "rbac.authorization.k8s.io"), True),
        },
        id="cluster-admin-default",
    ),
]


def is_allowed(authorization: k8s.AuthorizationV1Api, namespace: str, access: Access) -> bool:
    """Ask the API server whether the ServiceAccount of the release in `namespace` (with its groups) may do this.

    The release namespace is also the one watched in namespaced scenarios.
    """
    request_namespace = {WATCHED: namespace, OTHER: "default"}.get(access.namespace or "", access.namespace)
    review = authorization.create_subject_access_review(
        k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:{FULLNAME}",
                groups=[
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ],
                resource_attributes=k8s.V1ResourceAttributes(
                    verb=access.verb,
                    group=access.group,
                    resource=access.resource,
                    subresource=access.subresource or None,
                    namespace=request_namespace,
                    name=access.name or None,
                ),
            )
        )
    )
    assert review.status is not None
    return bool(review.status.allowed)


@pytest.fixture
def installed(helm: Helm, namespace: str) -> Iterator[list[str]]:
    """Names of the releases a test installs, uninstalled afterwards: their ClusterRoles outlive the namespace."""
    releases: list[str] = []
    yield releases
    for release in releases:
        helm.run("uninstall", release, "--namespace", namespace, check=False)


@pytest.mark.parametrize(("set_args", "checks"), SCENARIOS)
def test_installed_rbac_allows_what_the_operator_needs_and_no_more(
    helm: Helm,
    namespace: str,
    api_client: k8s.ApiClient,
    installed: list[str],
    set_args: tuple[str, ...],
    checks: dict[str, tuple[Access, bool]],
) -> None:
    """Install for real (objects validated by the API server), then ask its RBAC authorizer about each request.

    `--skip-crds`: the chart creates no HelmRelease and RBAC does not need the type to be served, so the test does
    not depend on the CRD (installed or not by `crd_installed`), whose validity other tests cover.
    """
    resolved = [arg.replace(WATCHED, namespace) for arg in set_args]
    installed.append(RELEASE)
    helm.run("install", RELEASE, str(CHART), "--namespace", namespace, "--skip-crds", *resolved)

    deployment = k8s.AppsV1Api(api_client).read_namespaced_deployment(FULLNAME, namespace)
    pod = deployment.spec.template.spec
    assert pod is not None
    assert [c.name for c in pod.containers] == ["operator", "image-policy"]
    assert helm.json("status", RELEASE, "--namespace", namespace)["info"]["status"] == "deployed"

    authorization = k8s.AuthorizationV1Api(api_client)
    eventually(  # RBAC caches catch up
        lambda: is_allowed(authorization, namespace, PATCH_STATUS),
        15,
        "the installed RBAC to allow patching helmreleases/status",
        interval=0.1,
    )
    answers = {what: is_allowed(authorization, namespace, access) for what, (access, _) in checks.items()}
    assert answers == {what: expected for what, (_, expected) in checks.items()}
