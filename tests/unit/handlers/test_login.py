"""The operator's kopf registry logs in as the kubernetes client does: a Pod's service account, else a kubeconfig.

`build_registry` makes a plain `kopf.OperatorRegistry`, which has no login handler of its own; these tests run the
login handlers it holds for kopf's authentication activity, in a Pod and outside one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._core.intents.causes import Activity  # kopf exports no name for its activities
from kubernetes import client as k8s
from kubernetes.config import incluster_config, kube_config

from helmrelease.handlers.operator import build_registry
from helmrelease.reconcile.settings import OperatorSettings

KUBECONFIG_SERVER = "https://kubeconfig.example:6443"


@pytest.fixture(autouse=True)
def _global_client_configuration() -> Iterator[None]:
    """kopf's login loads the kubernetes client's global default configuration: put it back afterwards."""
    saved = k8s.Configuration.get_default_copy()
    yield
    k8s.Configuration.set_default(saved)


def outside_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": KUBECONFIG_SERVER}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "no-token"))


def in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Pod has: the service's address in the environment and the account's token and CA as files."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("service-account-token")
    ca.write_text("CA")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")


def login(tmp_path: Path) -> list[Any]:
    """What each login handler of the operator's registry returns, as kopf calls it."""
    registry = build_registry(OperatorSettings(state_dir=tmp_path / "state"), dependencies=None)
    handlers = list(registry._activities.iter_handlers(activity=Activity.AUTHENTICATION))
    assert handlers, "no login handler: kopf would never get credentials"
    return [
        handler.fn(logger=logging.getLogger("test"), settings=kopf.OperatorSettings()) for handler in handlers
    ]


@pytest.mark.parametrize(
    ("environment", "server", "token"),
    [
        pytest.param(in_a_pod, "https://10.0.0.1:443", "service-account-token", id="in-a-pod"),
        pytest.param(outside_a_pod, KUBECONFIG_SERVER, "kubeconfig-token", id="kubeconfig"),
    ],
)
def test_the_operator_logs_in_in_a_pod_and_with_a_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: Any, server: str, token: str
) -> None:
    environment(tmp_path, monkeypatch)
    [info] = login(tmp_path)
    assert isinstance(info, kopf.ConnectionInfo)
    assert (info.server, info.token) == (server, token)
