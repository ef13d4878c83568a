"""Choosing the cluster client: an explicit kubeconfig, else the pod's service account, else the default file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.config import incluster_config, kube_config

from helmrelease.adapters import kube
from helmrelease.adapters.kube import KubeClient, api_client

IN_CLUSTER = "https://10.0.0.1:443"
DEFAULT_FILE = "https://default.example:6443"
GIVEN_FILE = "https://given.example:6443"


def kubeconfig(path: Path, server: str) -> Path:
    cluster = {"name": "c", "cluster": {"server": server}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def default_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBECONFIG as the kubernetes package read it at import, pointing at a file of ours."""
    path = kubeconfig(tmp_path / "default", DEFAULT_FILE)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, in_cluster: bool) -> None:
    """The service account files and address a Pod has, or none of them."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    if in_cluster:
        token.write_text("service-account-token")
        ca.write_text("CA")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.mark.usefixtures("default_kubeconfig")
@pytest.mark.parametrize(
    ("in_cluster", "given", "host"),
    [
        pytest.param(True, True, GIVEN_FILE, id="given-kubeconfig-wins-in-a-pod"),
        pytest.param(False, True, GIVEN_FILE, id="given-kubeconfig"),
        pytest.param(True, False, IN_CLUSTER, id="service-account-in-a-pod"),
        pytest.param(False, False, DEFAULT_FILE, id="default-kubeconfig-outside-a-pod"),
    ],
)
def test_client_source_and_global_default_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_cluster: bool, given: bool, host: str
) -> None:
    pod(tmp_path, monkeypatch, in_cluster=in_cluster)
    default_host = k8s.Configuration.get_default_copy().host
    client = api_client(kubeconfig(tmp_path / "given", GIVEN_FILE) if given else None)
    assert client.configuration.host == host
    assert k8s.Configuration.get_default_copy().host == default_host


def test_impersonating_clients_are_separate_and_kept_per_account(tmp_path: Path) -> None:
    operator = KubeClient(api_client(kubeconfig(tmp_path / "given", GIVEN_FILE)))
    tenant = operator.impersonating("team-a", "deployer")
    assert tenant.api_client.default_headers["Impersonate-User"] == "system:serviceaccount:team-a:deployer"
    assert "Impersonate-User" not in operator.api_client.default_headers  # the shared client is never changed
    assert tenant.api_client.configuration is operator.api_client.configuration
    assert (operator.identity, tenant.identity) == (None, "ServiceAccount team-a/deployer")
    assert operator.impersonating("team-a", "deployer") is tenant
    assert tenant.impersonating("team-b", "x") is operator.impersonating("team-b", "x")  # never stacked
    assert operator.impersonating("team-b", "x").api_client.default_headers["Impersonate-User"] == (
        "system:serviceaccount:team-b:x"
    )


def test_impersonating_clients_are_bounded_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "IMPERSONATED_CLIENTS", 2)
    operator = KubeClient(api_client(kubeconfig(tmp_path / "given", GIVEN_FILE)))
    first, second = operator.impersonating("a", "one"), operator.impersonating("a", "two")
    assert operator.impersonating("a", "one") is first  # used again: now the most recent
    operator.impersonating("a", "three")
    assert operator.impersonating("a", "one") is first
    assert operator.impersonating("a", "two") is not second
