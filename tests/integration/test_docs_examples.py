"""The examples of docs/ as the real API server sees them: every Kubernetes object in a YAML block is accepted.

The unit tests validate HelmReleases against the CRD's openAPIV3Schema with jsonschema; only the API server runs
the CRD's CEL rules (one chart source, name and version together, one values source per entry), and only it
knows the built-in kinds (the Roles of the multi-tenancy example). Each object goes through a server-side dry run
in the test's namespace, so nothing is stored.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.support.docs import documents, yaml_blocks
from tests.support.procs import binary

#: Kinds of the docs' examples the test control plane serves; the others (a PrometheusRule, a kustomization)
#: need software it does not run, and are checked by the unit tests as YAML only.
SERVED = frozenset({"HelmRelease", "Role", "RoleBinding", "ServiceAccount", "ConfigMap", "Secret"})


def objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{block.where}#{index}", document)
        for block in yaml_blocks()
        for index, document in enumerate(documents(block))
        if isinstance(document, dict) and document.get("kind") in SERVED and "apiVersion" in document
    ]


OBJECTS = objects()


def test_the_docs_have_objects_to_send() -> None:
    kinds = {body["kind"] for _, body in OBJECTS}
    assert {"HelmRelease", "Role", "RoleBinding"} <= kinds
    assert len(OBJECTS) >= 7


def dry_run(kubeconfig: Path, namespace: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side --dry-run=server` of `body` in `namespace`: validated, admitted, not stored."""
    obj = copy.deepcopy(body)
    obj["metadata"]["namespace"] = namespace
    return subprocess.run(
        [
            binary("kubectl"),
            "--kubeconfig",
            str(kubeconfig),
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager",
            "helmrelease-docs-test",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize(("where", "body"), OBJECTS, ids=[where for where, _ in OBJECTS])
def test_the_api_server_accepts_every_example(
    kubeconfig: Path, namespace: str, where: str, body: dict[str, Any]
) -> None:
    result = dry_run(kubeconfig, namespace, body)
    assert (result.returncode, result.stderr) == (0, ""), where
    assert "(server dry run)" in result.stdout, where


@pytest.mark.usefixtures("crd_installed")
def test_the_dry_run_refuses_what_the_cel_rules_refuse(kubeconfig: Path, namespace: str) -> None:
    """The check above can fail: a docs example given a second chart source is refused with the CRD's message."""
    example = next(
        body for _, body in OBJECTS if body["kind"] == "HelmRelease" and "repository" in body["spec"]["chart"]
    )
    broken = copy.deepcopy(example)
    broken["spec"]["chart"].update(git="https://git.example.com/org/repo", path="charts/app")
    result = dry_run(kubeconfig, namespace, broken)
    assert result.returncode != 0
    assert "set exactly one chart source" in result.stderr
