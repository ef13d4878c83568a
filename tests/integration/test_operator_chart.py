"""The operator's own chart: lint, what it renders for each setting, and installed RBAC checked by the API server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from ruamel.yaml import YAML
from tests.support.helmtool import Helm
from tests.support.procs import REPO_ROOT

CHART = REPO_ROOT / "manifests" / "chart" / "helmrelease-operator"
RELEASE = "hro"
FULLNAME = f"{RELEASE}-helmrelease-operator"
IMAGE = "ghcr.io/helmrelease-operator/helmrelease-operator:0.1.0"


def sets(*assignments: str) -> tuple[str, ...]:
    """`helm --set` arguments, one per assignment."""
    return tuple(arg for assignment in assignments for arg in ("--set", assignment))


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
    [found] = [c for c in pod_spec(manifests)["containers"] if c["name"] == name]
    return found


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
CLUSTER_RULES = grants("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch") | grants(
    "", "namespaces", "get", "list", "watch"
)
IMPERSONATE_SERVICE_ACCOUNTS = grants("", "serviceaccounts", "impersonate")


@pytest.mark.parametrize(
    "set_args",
    [pytest.param((), id="defaults"), pytest.param(MULTI_TENANT_GIT, id="namespaced-multi-tenant-git")],
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
        "--liveness=http://0.0.0.0:8080/healthz",
        "--standalone",
    ]
    assert args(manifests, "image-policy") == [
        "image-policy",
        "--interval=300",
        "--log-format=json",
        "--health-port=8081",
        "--metrics-port=9090",
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
        writable = {
            m["mountPath"] for m in container(manifests, name)["volumeMounts"] if m["name"] in empty_dirs
        }
        assert "/tmp" in writable
    operator_writable = {
        m["mountPath"] for m in container(manifests, "operator")["volumeMounts"] if m["name"] in empty_dirs
    }
    assert "/var/lib/helmrelease" in operator_writable
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
            sets("operator.extraArgs={--verbose}", "imagePolicy.extraArgs={--once}"),
            {"operator": ["--verbose"], "image-policy": ["--once"]},
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


def test_every_mounted_file_a_flag_names_comes_from_the_configured_object(helm: Helm) -> None:
    manifests = render(
        helm,
        *MULTI_TENANT_GIT,
        *sets(
            "operator.gitSSHKeySecret.name=charts-git",
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
        ("image-policy", "--git-ssh-key"): ("image-policy-git", "identity"),
        ("image-policy", "--docker-config"): ("registry-credentials", ".dockerconfigjson"),
        ("image-policy", "--registry-ca"): ("registry-cas", "internal.crt"),
    }


def test_namespaced_multi_tenant_rbac_is_per_namespace_with_service_account_impersonation_only(
    helm: Helm,
) -> None:
    manifests = render(helm, *MULTI_TENANT_GIT)
    roles = {r["metadata"]["namespace"]: rules(r) for r in objects(manifests, "Role")}
    assert roles == {
        "team-a": WATCHED_NAMESPACE_RULES | IMPERSONATE_SERVICE_ACCOUNTS,
        "team-b": WATCHED_NAMESPACE_RULES | IMPERSONATE_SERVICE_ACCOUNTS,
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


@pytest.mark.parametrize(
    ("set_args", "cluster_extra", "namespace_extra"),
    [
        pytest.param(
            sets("operator.peering.name=ops"),
            grants("kopf.dev", "clusterkopfpeerings", "get", "list", "watch", "patch"),
            None,
            id="cluster-peering",
        ),
        pytest.param(
            sets("operator.peering.name=ops", "watchNamespaces={team-a}"),
            set(),
            grants("kopf.dev", "kopfpeerings", "get", "list", "watch", "patch"),
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


def test_metrics_service_targets_the_sidecar_metrics_port(helm: Helm) -> None:
    manifests = render(helm, *sets("metrics.service.enabled=true"))
    [service] = objects(manifests, "Service")
    [port] = service["spec"]["ports"]
    [deployment] = objects(manifests, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in container(manifests, "image-policy")["ports"]}
    assert (port["targetPort"], ports[port["targetPort"]]) == ("metrics", 9090)


@pytest.mark.parametrize(
    ("set_args", "message"),
    [
        pytest.param(sets("replicaCount=2"), "replicaCount must be 0 or 1", id="two-replicas"),
        pytest.param(sets("logFormat=xml"), "logFormat must be text or json", id="log-format"),
        pytest.param(
            sets(
                "imagePolicy.registry.caBundles.hosts[0].host=r",
                "imagePolicy.registry.caBundles.hosts[0].key=k",
            ),
            "needs imagePolicy.registry.caBundles.configMapName",
            id="ca-without-configmap",
        ),
        pytest.param(
            sets("metrics.service.enabled=true", "imagePolicy.enabled=false"),
            "it needs imagePolicy.enabled",
            id="metrics-without-sidecar",
        ),
        pytest.param(
            sets("serviceAccount.create=false"),
            "serviceAccount.name is required",
            id="no-service-account",
        ),
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
    assert [c.name for c in deployment.spec.template.spec.containers] == ["operator", "image-policy"]
    assert helm.json("status", RELEASE, "--namespace", namespace)["info"]["status"] == "deployed"

    authorization = k8s.AuthorizationV1Api(api_client)
    deadline = time.monotonic() + 15
    while not is_allowed(authorization, namespace, PATCH_STATUS):  # RBAC caches catch up
        assert time.monotonic() < deadline, "the installed RBAC never allowed patching helmreleases/status"
        time.sleep(0.1)
    answers = {what: is_allowed(authorization, namespace, access) for what, (access, _) in checks.items()}
    assert answers == {what: expected for what, (_, expected) in checks.items()}
