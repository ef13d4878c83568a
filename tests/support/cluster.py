"""Choosing the cluster the integration tests use: the local control plane, or an existing one behind a guard."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ruamel.yaml import YAML

ENV_KUBECONFIG = "HELMRELEASE_TEST_KUBECONFIG"
ENV_CONTEXT = "HELMRELEASE_TEST_CONTEXT"
# Context names that say "this is a throwaway cluster". Anything else is refused: the suite creates and deletes
# namespaces, CRDs and releases.
TEST_CONTEXT = re.compile(r"(^|[-_.])(test|kind|k3d|minikube|envtest|local|dev|ci)([-_.]|$)", re.IGNORECASE)


class UnsafeClusterError(RuntimeError):
    """The requested context does not look like a test cluster."""


@dataclass(frozen=True)
class ExistingCluster:
    kubeconfig: Path
    context: str
    server: str


def existing_cluster_from_env() -> ExistingCluster | None:
    """The cluster named by HELMRELEASE_TEST_KUBECONFIG/HELMRELEASE_TEST_CONTEXT, if set, after the safety guard."""
    path = os.environ.get(ENV_KUBECONFIG)
    if not path:
        return None
    config = YAML(typ="safe").load(Path(path).read_text())
    context = os.environ.get(ENV_CONTEXT) or config.get("current-context") or ""
    return guard(Path(path), config, context)


def guard(path: Path, config: dict, context: str) -> ExistingCluster:  # type: ignore[type-arg]
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    if context not in contexts:
        raise UnsafeClusterError(f"context {context!r} is not in {path}")
    server = clusters[contexts[context]["cluster"]]["server"]
    host = urlparse(server).hostname or ""
    if not TEST_CONTEXT.search(context) and host not in ("127.0.0.1", "localhost", "::1"):
        raise UnsafeClusterError(
            f"refusing context {context!r} ({server}): its name does not mark it as a test cluster "
            "(test, kind, k3d, minikube, envtest, local, dev, ci) and it is not on loopback"
        )
    return ExistingCluster(path, context, server)
