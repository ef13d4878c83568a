"""Classifying helm's stderr: every sample below was captured from the real helm v3.22 and v4.3 binaries."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmrelease.adapters import helm

REPO = "http://127.0.0.1:46597/"
AUTH_REPO = "http://127.0.0.1:46229/"
OCI = "127.0.0.1:60295/charts"

# (id, stderr, error class). Where v3 and v4 print the same text, one sample stands for both.
SAMPLES = [
    (
        "chart-not-found-in-repo",
        f'Error: chart "nope" version "0.1.0" not found in {REPO} repository',
        helm.ChartNotFound,
    ),
    (
        "version-not-found-in-repo",
        f'Error: chart "app" version "9.9.9" not found in {REPO} repository',
        helm.ChartNotFound,
    ),
    (
        "version-not-in-repository-index",
        "Error: chart \"app\" matching 9.9.9 not found in source index. (try 'helm repo update'): "
        "no chart version found for app-9.9.9",
        helm.ChartNotFound,
    ),
    (
        "chart-not-in-repository-index",
        "Error: chart \"nope\" matching 0.1.0 not found in source index. (try 'helm repo update'): "
        "no chart name found",
        helm.ChartNotFound,
    ),
    (
        "repo-404",
        '...Unable to get an update from the "source" chart repository (http://127.0.0.1:46597/nope):\n'
        "\tfailed to fetch http://127.0.0.1:46597/nope/index.yaml : 404 File not found\n"
        "Error: failed to update the following repositories: [http://127.0.0.1:46597/nope]",
        helm.ChartNotFound,
    ),
    (
        "oci-chart-not-found",
        f'Error: failed to perform "FetchReference" on source: {OCI}/nope:0.1.0: not found',
        helm.ChartNotFound,
    ),
    (
        "oci-version-not-found",
        f'Error: failed to perform "FetchReference" on source: {OCI}/app:9.9.9: not found',
        helm.ChartNotFound,
    ),
    (
        "local-path-not-found",
        'Error: INSTALLATION FAILED: path "/tmp/hx/nonexistent" not found',
        helm.ChartNotFound,
    ),
    (
        "repo-connection-refused",
        'Error: looks like "http://127.0.0.1:1/" is not a valid chart repository or cannot be reached: '
        'Get "http://127.0.0.1:1/index.yaml": dial tcp 127.0.0.1:1: connect: connection refused',
        helm.RepositoryUnreachable,
    ),
    (
        "repo-no-such-host",
        'Error: looks like "http://nosuch.invalid/" is not a valid chart repository or cannot be reached: '
        'Get "http://nosuch.invalid/index.yaml": dial tcp: lookup nosuch.invalid on 10.255.255.53:53: no such host',
        helm.RepositoryUnreachable,
    ),
    (
        "oci-connection-refused",
        'Error: failed to perform "FetchReference" on source: Get '
        '"http://127.0.0.1:1/v2/charts/app/manifests/0.1.0": dial tcp 127.0.0.1:1: connect: connection refused',
        helm.RepositoryUnreachable,
    ),
    (
        "v4-oci-https-to-http-registry",
        'Error: failed to perform "FetchReference" on source: Get '
        '"https://127.0.0.1:60295/v2/charts/app/manifests/0.1.0": http: server gave HTTP response to HTTPS client',
        helm.RepositoryUnreachable,
    ),
    (
        "repo-401-pull",
        f'Error: looks like "{AUTH_REPO}" is not a valid chart repository or cannot be reached: '
        f"failed to fetch {AUTH_REPO}index.yaml : 401 Unauthorized",
        helm.Unauthorized,
    ),
    (
        "v4-repo-401-update",
        '...Unable to get an update from the "source" chart repository (http://127.0.0.1:46229):\n'
        "\tfailed to fetch http://127.0.0.1:46229/index.yaml : 401 Unauthorized\n"
        "Error: failed to update the following repositories: [http://127.0.0.1:46229]",
        helm.Unauthorized,
    ),
    (
        "oci-no-credentials",
        'Error: failed to perform "FetchReference" on source: GET '
        '"http://127.0.0.1:60945/v2/charts/app/manifests/0.1.0": basic credential not found',
        helm.Unauthorized,
    ),
    (
        "oci-wrong-credentials",
        'Error: failed to perform "FetchReference" on source: GET '
        '"http://127.0.0.1:60945/v2/charts/app/manifests/0.1.0": response status code 401: unauthorized: '
        "authentication required: [map[Action:pull Class: Name:charts/app Type:repository]]",
        helm.Unauthorized,
    ),
    (
        "render-fail-function",
        "Error: INSTALLATION FAILED: execution error at (app/templates/configmap.yaml:1:40): "
        "failure=render was requested",
        helm.RenderFailed,
    ),
    (
        "values-schema",
        "Error: INSTALLATION FAILED: values don't meet the specifications of the schema(s) in the following "
        "chart(s):\nsch:\n- at '/port': got string, want integer\n",
        helm.RenderFailed,
    ),
    (
        "v4-apiserver-invalid",
        "Error: INSTALLATION FAILED: server-side apply failed for object cap-v4/ai /v1, Kind=Service: "
        'Service "ai" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive',
        helm.InvalidResource,
    ),
    (
        "v3-apiserver-invalid",
        'Error: INSTALLATION FAILED: 1 error occurred:\n\t* Service "ai" is invalid: spec.ports[0].port: '
        "Invalid value: 0: must be between 1 and 65535, inclusive\n\n",
        helm.InvalidResource,
    ),
    (
        "v4-immutable-field",
        'level=WARN msg="upgrade failed" name=imm error="server-side apply failed for object cap2-v4/imm /v1, '
        'Kind=Service: Service \\"imm\\" is invalid: spec.clusterIPs[0]: Invalid value: [\\"10.0.0.51\\"]: '
        'may not change once set"\n'
        "Error: UPGRADE FAILED: server-side apply failed for object cap2-v4/imm /v1, Kind=Service: "
        'Service "imm" is invalid: spec.clusterIPs[0]: Invalid value: ["10.0.0.51"]: may not change once set',
        helm.InvalidResource,
    ),
    (
        "v3-immutable-field",
        'Error: UPGRADE FAILED: cannot patch "imm" with kind Service: Service "imm" is invalid: '
        'spec.clusterIPs[0]: Invalid value: ["10.0.0.71"]: may not change once set',
        helm.InvalidResource,
    ),
    (
        "kind-without-crd",
        "Error: INSTALLATION FAILED: unable to build kubernetes objects from release manifest: resource "
        'mapping not found for name: "nocrd" namespace: "" from "": no matches for kind "Widget" in version '
        '"test.helmrelease.dev/v1"\nensure CRDs are installed first',
        helm.InvalidResource,
    ),
    (
        "namespace-missing",
        'Error: INSTALLATION FAILED: create: failed to create: namespaces "missing-ns" not found',
        helm.NamespaceNotFound,
    ),
    (
        "v4-name-in-use",
        'level=ERROR msg="release name check failed" error="cannot reuse a name that is still in use"\n'
        "Error: INSTALLATION FAILED: release name check failed: cannot reuse a name that is still in use",
        helm.Conflict,
    ),
    (
        "v3-name-in-use",
        "Error: INSTALLATION FAILED: cannot re-use a name that is still in use",
        helm.Conflict,
    ),
    (
        "object-without-helm-ownership",
        'Error: INSTALLATION FAILED: unable to continue with install: ConfigMap "clash" in namespace "cap-v4" '
        "exists and cannot be imported into the current release: invalid ownership metadata; label validation "
        'error: missing key "app.kubernetes.io/managed-by": must be set to "Helm"',
        helm.Conflict,
    ),
    (
        "object-of-another-release",
        'Error: INSTALLATION FAILED: Unable to continue with install: ConfigMap "fixed-name" in namespace '
        '"cap2-v3" exists and cannot be imported into the current release: invalid ownership metadata; '
        'annotation validation error: key "meta.helm.sh/release-name" must equal "b": current value is "a"',
        helm.Conflict,
    ),
    (
        "v4-server-side-apply-conflict",
        "Error: UPGRADE FAILED: conflict occurred while applying object cap2-v4/fixed-name /v1, Kind=ConfigMap: "
        'Apply failed with 1 conflict: conflict with "intruder": .data.key',
        helm.Conflict,
    ),
    (
        "release-locked",
        "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress",
        helm.ReleaseLocked,
    ),
    ("status-of-missing-release", "Error: release: not found", helm.ReleaseNotFound),
    (
        "uninstall-of-missing-release",
        "Error: uninstall: Release not loaded: missing: release: not found",
        helm.ReleaseNotFound,
    ),
    (
        "upgrade-without-deployed-revision",
        'Error: UPGRADE FAILED: "missing" has no deployed releases',
        helm.ReleaseNotFound,
    ),
    (
        "v4-wait-timeout",
        'level=WARN msg="upgrade failed" name=ok error="resource Deployment/cap-v4/ok not ready. status: '
        'InProgress, message: Replicas: 0/1\\ncontext deadline exceeded"\n'
        "Error: UPGRADE FAILED: resource Deployment/cap-v4/ok not ready. status: InProgress, message: "
        "Replicas: 0/1\ncontext deadline exceeded",
        helm.Timeout,
    ),
    ("v3-wait-timeout", "Error: UPGRADE FAILED: context deadline exceeded", helm.Timeout),
    (
        "v4-test-timeout",
        "Error: resource Pod/cap2-v4/t-test not ready. status: InProgress, message: Pod in progress\n"
        "context deadline exceeded",
        helm.Timeout,
    ),
    (
        "v3-test-timeout",
        "Error: 1 error occurred:\n\t* timed out waiting for the condition\n\n",
        helm.Timeout,
    ),
    (
        "v4-test-failed",
        "Error: resource Pod/cap2-v4/t-test not ready. status: Failed, message: pod t-test failed",
        helm.TestFailed,
    ),
    ("v3-test-failed", "Error: 1 error occurred:\n\t* pod t-test failed\n\n", helm.TestFailed),
    (
        "rbac-denied-install",
        "Error: INSTALLATION FAILED: unable to continue with install: could not get information about the "
        'resource ConfigMap "fb" in namespace "cap-v4": configmaps "fb" is forbidden: User '
        '"system:serviceaccount:cap-v4:default" cannot get resource "configmaps" in API group "" in the '
        'namespace "cap-v4"',
        helm.Forbidden,
    ),
    (
        "rbac-denied-status",
        'Error: query: failed to query with labels: secrets is forbidden: User "system:serviceaccount:cap-v4:'
        'default" cannot list resource "secrets" in API group "" in the namespace "cap-v4"',
        helm.Forbidden,
    ),
    (
        "admission-denied-test-pod",
        "Error: warning: Hook test tested/templates/test-pod.yaml failed: server-side apply failed for object "
        'cap2-v4/t-test /v1, Kind=Pod: pods "t-test" is forbidden: error looking up service account '
        'cap2-v4/default: serviceaccount "default" not found',
        helm.Forbidden,
    ),
    (
        "v4-cluster-unreachable",
        'Error: kubernetes cluster unreachable: Get "https://127.0.0.1:1/version": dial tcp 127.0.0.1:1: '
        "connect: connection refused",
        helm.ClusterUnreachable,
    ),
    (
        "v3-cluster-unreachable",
        'Error: Kubernetes cluster unreachable: Get "https://127.0.0.1:1/version": dial tcp 127.0.0.1:1: '
        "connect: connection refused",
        helm.ClusterUnreachable,
    ),
    (
        "v4-terminated",
        'level=WARN msg="upgrade failed" name=app2 error="context canceled"\n'
        "Error: UPGRADE FAILED: context canceled",
        helm.Cancelled,
    ),
    # The cluster's fault or the configuration's (captured against the test control plane, with a ResourceQuota
    # whose status says it is used up, a ValidatingWebhookConfiguration pointing at a closed port or at a server
    # that says no, and a kube-apiserver started with a /29 Service range).
    (
        "v4-quota-exceeded-install",
        "Error: INSTALLATION FAILED: server-side apply failed for object quota-helm/web /v1, Kind=Service: "
        'services "web" is forbidden: exceeded quota: q, requested: services=1, used: services=0, limited: '
        "services=0",
        helm.ClusterProblem,
    ),
    (
        "v4-quota-exceeded-upgrade",
        'level=WARN msg="upgrade failed" name=web error="failed to create resource: server-side apply failed for '
        'object quota-helm/web /v1, Kind=Service: services \\"web\\" is forbidden: exceeded quota: q, requested: '
        'services=1, used: services=0, limited: services=0"\n'
        "Error: UPGRADE FAILED: failed to create resource: server-side apply failed for object quota-helm/web "
        '/v1, Kind=Service: services "web" is forbidden: exceeded quota: q, requested: services=1, used: '
        "services=0, limited: services=0",
        helm.ClusterProblem,
    ),
    (
        "v3-quota-exceeded-install",
        'Error: INSTALLATION FAILED: 1 error occurred:\n\t* services "web" is forbidden: exceeded quota: q, '
        "requested: services=1, used: services=0, limited: services=0",
        helm.ClusterProblem,
    ),
    (
        "v3-quota-exceeded-upgrade",
        'Error: UPGRADE FAILED: failed to create resource: services "web" is forbidden: exceeded quota: q, '
        "requested: services=1, used: services=0, limited: services=0",
        helm.ClusterProblem,
    ),
    (
        "v4-webhook-down",
        "Error: INSTALLATION FAILED: server-side apply failed for object hook-helm/web /v1, Kind=ConfigMap: "
        'Internal error occurred: failed calling webhook "down.test.dev": failed to call webhook: Post '
        '"https://127.0.0.1:1/validate?timeout=10s": dial tcp 127.0.0.1:1: connect: connection refused',
        helm.ClusterProblem,
    ),
    (
        "v3-webhook-down",
        "Error: INSTALLATION FAILED: 1 error occurred:\n\t* Internal error occurred: failed calling webhook "
        '"down.test.dev": failed to call webhook: Post "https://127.0.0.1:1/validate?timeout=10s": dial tcp '
        "127.0.0.1:1: connect: connection refused",
        helm.ClusterProblem,
    ),
    (
        "v4-webhook-denied",
        "Error: INSTALLATION FAILED: server-side apply failed for object deny-helm/web /v1, Kind=ConfigMap: "
        'admission webhook "deny.test.dev" denied the request: configmaps need an owner label',
        helm.InvalidResource,
    ),
    (
        "v3-webhook-denied",
        'Error: INSTALLATION FAILED: 1 error occurred:\n\t* admission webhook "deny.test.dev" denied the request: '
        "configmaps need an owner label",
        helm.InvalidResource,
    ),
    (
        "v4-service-ip-range-full",
        "Error: INSTALLATION FAILED: server-side apply failed for object default/w5 /v1, Kind=Service: Internal "
        'error occurred: failed to allocate a serviceIP for Service "w5": range is full',
        helm.ClusterProblem,
    ),
    (
        "v3-service-ip-range-full",
        "Error: INSTALLATION FAILED: 1 error occurred:\n\t* Internal error occurred: failed to allocate a "
        'serviceIP for Service "w6": range is full',
        helm.ClusterProblem,
    ),
    ("unrecognised", "Error: something nobody has seen before", helm.HelmError),
]

# Not captured: the API server's own wording (k8s.io/apimachinery status messages, etcd's errors, Go's net/http)
# as helm prints it, for states a test cluster does not reach on demand.
SERVER_WORDING = [
    (
        "503-unavailable",
        "Error: INSTALLATION FAILED: the server is currently unable to handle the request (post configmaps)",
        helm.ClusterProblem,
    ),
    (
        "429-throttled",
        "Error: UPGRADE FAILED: the server has received too many requests and has asked us to try again later "
        "(patch deployments.apps web)",
        helm.ClusterProblem,
    ),
    (
        "504-gateway-timeout",
        "Error: INSTALLATION FAILED: the server was unable to return a response in the time allotted, but may "
        "still be processing the request (post services)",
        helm.ClusterProblem,
    ),
    (
        "apiserver-request-timeout",
        "Error: UPGRADE FAILED: Timeout: request did not complete within requested timeout - context deadline "
        "exceeded",
        helm.ClusterProblem,
    ),
    ("etcd-timeout", "Error: INSTALLATION FAILED: etcdserver: request timed out", helm.ClusterProblem),
    ("etcd-leader-changed", "Error: UPGRADE FAILED: etcdserver: leader changed", helm.ClusterProblem),
    (
        "409-modified-meanwhile",
        'Error: UPGRADE FAILED: Operation cannot be fulfilled on configmaps "web": the object has been modified; '
        "please apply your changes to the latest version and try again",
        helm.ClusterProblem,
    ),
    (
        "tls-handshake-timeout",
        'Error: UPGRADE FAILED: Patch "https://10.0.0.1:443/api/v1/namespaces/apps/services/web": net/http: TLS '
        "handshake timeout",
        helm.RepositoryUnreachable,
    ),
    (
        "api-connection-refused-mid-upgrade",
        'Error: UPGRADE FAILED: Get "https://127.0.0.1:6443/api/v1/namespaces/apps/secrets?labelSelector=owner": '
        "dial tcp 127.0.0.1:6443: connect: connection refused",
        helm.RepositoryUnreachable,
    ),
    (
        "http2-connection-lost",
        'Error: UPGRADE FAILED: Get "https://127.0.0.1:6443/apis/apps/v1/namespaces/apps/deployments/web": '
        "http2: client connection lost",
        helm.RepositoryUnreachable,
    ),
]


@pytest.mark.parametrize(
    ("stderr", "expected"), [pytest.param(s, e, id=i) for i, s, e in SAMPLES + SERVER_WORDING]
)
def test_stderr_samples_are_classified(stderr: str, expected: type[helm.HelmError]) -> None:
    assert helm.classify(stderr) is expected


#: What the cluster causes, which the reconciler retries by itself; the rest waits for a change of the release.
CLUSTER_SIDE = {helm.ClusterProblem, helm.ClusterUnreachable, helm.RepositoryUnreachable, helm.ReleaseLocked}


@pytest.mark.parametrize(
    "error", sorted({e for _, e in helm.HELM_ERRORS} | {helm.HelmError}, key=lambda e: e.__name__), ids=str
)
def test_only_the_clusters_failures_are_cluster_side(error: type[helm.HelmError]) -> None:
    assert error.cluster_side is (error in CLUSTER_SIDE)


def test_a_quota_is_the_clusters_but_rbac_is_the_configurations() -> None:
    """Both are 403 "is forbidden": the text after it decides."""
    quota = 'Error: INSTALLATION FAILED: pods "web-0" is forbidden: exceeded quota: compute, requested: cpu=2'
    rbac = 'Error: INSTALLATION FAILED: pods "web-0" is forbidden: User "system:serviceaccount:t:d" cannot create'
    assert (helm.classify(quota).cluster_side, helm.classify(rbac).cluster_side) == (True, False)


@pytest.mark.parametrize(
    ("detail", "cause"),
    [
        pytest.param(
            "Error: UPGRADE FAILED: context deadline exceeded", "context deadline exceeded", id="v3-upgrade"
        ),
        pytest.param(
            "Error: INSTALLATION FAILED: execution error at (app/templates/configmap.yaml:1:40): x",
            "execution error at (app/templates/configmap.yaml:1:40): x",
            id="install",
        ),
        pytest.param(
            "Error: UPGRADE FAILED: resource Deployment/a/b not ready.\ncontext deadline exceeded",
            "resource Deployment/a/b not ready.\ncontext deadline exceeded",
            id="v4-multi-line",
        ),
        pytest.param(
            "Error: 1 error occurred:\n* pod t-test failed",  # as trim_stderr leaves it
            "1 error occurred:\n* pod t-test failed",
            id="test",
        ),
        pytest.param("did not finish within 30s", "did not finish within 30s", id="ours"),
        pytest.param("", "upgrade", id="nothing-said"),
    ],
)
def test_the_cause_drops_helms_framing(detail: str, cause: str) -> None:
    """The message around it already says which action failed: "Upgrading ... failed: <cause>", once."""
    assert helm.HelmError("upgrade", detail).cause == cause


@pytest.mark.parametrize(
    "error",
    sorted({e for _, _, e in SAMPLES} - {helm.HelmError}, key=lambda e: e.__name__),
    ids=lambda e: e.__name__,
)
def test_every_error_class_is_reached_by_a_sample(error: type[helm.HelmError]) -> None:
    """No pattern group is dead: each class in the table is what at least one real sample becomes."""
    assert error in {kind for _, kind in helm.HELM_ERRORS}
    assert any(helm.classify(stderr) is error for _, stderr, _ in SAMPLES)


def test_error_carries_operation_tail_and_returncode() -> None:
    error = helm.error_from_stderr("upgrade", "Error: UPGRADE FAILED: context deadline exceeded", 1)
    assert isinstance(error, helm.Timeout)
    assert (error.operation, error.detail, error.returncode) == (
        "upgrade",
        "Error: UPGRADE FAILED: context deadline exceeded",
        1,
    )
    assert str(error) == "upgrade: Error: UPGRADE FAILED: context deadline exceeded"


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        pytest.param(
            'level=WARN msg="upgrade failed" name=a error="context canceled"\nError: UPGRADE FAILED: context canceled',
            "Error: UPGRADE FAILED: context canceled",
            id="v4-structured-log-line-dropped",
        ),
        pytest.param(
            "WARNING: Kubernetes configuration file is group-readable.\nError: release: not found",
            "Error: release: not found",
            id="warning-dropped",
        ),
        pytest.param(
            "Hang tight while we grab the latest from your chart repositories...\n"
            "...Unable to get an update from the source chart repository (x):\n\tfailed: 401 Unauthorized\n"
            "Update Complete. ⎈Happy Helming!⎈",
            "...Unable to get an update from the source chart repository (x):\nfailed: 401 Unauthorized",
            id="repo-update-chatter-dropped",
        ),
        pytest.param("\n\n  Error: x  \n\n", "Error: x", id="blank-lines-dropped"),
        pytest.param(
            'level=ERROR msg="only structured lines"',
            'level=ERROR msg="only structured lines"',
            id="all-noise-kept",
        ),
        pytest.param(
            'Error: Get "https://robot:s3cret@charts.example/index.yaml": 401',
            'Error: Get "https://***@charts.example/index.yaml": 401',
            id="url-credentials-masked",
        ),
    ],
)
def test_trim_keeps_the_useful_lines(stderr: str, expected: str) -> None:
    assert helm.trim_stderr(stderr) == expected


def test_trim_keeps_the_end_of_a_long_message() -> None:
    stderr = "Error: " + "x" * 3000 + " root cause"
    trimmed = helm.trim_stderr(stderr)
    assert len(trimmed) == 1000
    assert trimmed.startswith("…")
    assert trimmed.endswith("root cause")


@given(st.text(max_size=5000), st.integers(min_value=2, max_value=2000))
def test_trim_never_exceeds_its_limit(stderr: str, limit: int) -> None:
    assert len(helm.trim_stderr(stderr, limit)) <= limit


# The characters RFC 3986 allows in a URL's userinfo.
USERINFO = st.text(alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:%", min_size=1)


@given(USERINFO, st.text(max_size=200))
def test_trim_never_shows_url_credentials(userinfo: str, surrounding: str) -> None:
    stderr = f"{surrounding}\nError: fetch https://{userinfo}@host/index.yaml failed"
    assert f"{userinfo}@" not in helm.trim_stderr(stderr, 5000).replace("***@", "")


@given(st.text(max_size=2000))
def test_classification_is_total(stderr: str) -> None:
    assert issubclass(helm.classify(stderr), helm.HelmError)
