"""The guard that keeps the suite off clusters that are not test clusters."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.cluster import UnsafeClusterError, guard


def _config(context: str, server: str) -> dict:  # type: ignore[type-arg]
    return {
        "contexts": [{"name": context, "context": {"cluster": "c"}}],
        "clusters": [{"name": "c", "cluster": {"server": server}}],
    }


@pytest.mark.parametrize(
    ("context", "server"),
    [
        pytest.param("kind-dev", "https://10.1.2.3:6443", id="kind"),
        pytest.param("k3d-ci", "https://10.1.2.3:6443", id="k3d"),
        pytest.param("minikube", "https://192.168.49.2:8443", id="minikube"),
        pytest.param("helmrelease-test", "https://10.0.0.1:6443", id="test-suffix"),
        pytest.param("prod-eu", "https://127.0.0.1:6443", id="loopback-any-name"),
    ],
)
def test_accepts_test_clusters(context: str, server: str) -> None:
    assert guard(Path("kc"), _config(context, server), context).server == server


@pytest.mark.parametrize(
    ("context", "server"),
    [
        pytest.param("prod-eu", "https://10.1.2.3:6443", id="prod"),
        pytest.param("production", "https://k8s.example.com", id="production"),
        pytest.param("contest", "https://k8s.example.com", id="test-inside-a-word"),
    ],
)
def test_refuses_other_clusters(context: str, server: str) -> None:
    with pytest.raises(UnsafeClusterError, match="refusing"):
        guard(Path("kc"), _config(context, server), context)


def test_refuses_unknown_context() -> None:
    with pytest.raises(UnsafeClusterError, match="not in"):
        guard(Path("kc"), _config("kind-a", "https://x"), "kind-b")
