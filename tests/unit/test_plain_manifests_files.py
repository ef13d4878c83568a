"""manifests/plain/ without helm: the CRD in it is the canonical one and kustomization.yaml lists every file.

The full comparison with `helm template` needs helm and is tests/integration/test_plain_manifests.py; this catches
the common case (the CRD changed, `make manifests` not run) in the unit run.
"""

from __future__ import annotations

from ruamel.yaml import YAML
from tests.support.crd_reference import load_crd
from tests.support.plain_manifests import PLAIN_DIR, REGENERATE, committed


def test_the_crd_in_the_plain_manifests_is_the_canonical_one() -> None:
    [crd] = [doc for doc in YAML(typ="safe").load_all(PLAIN_DIR / "crd.yaml") if doc]
    assert crd == load_crd(), f"manifests/plain/crd.yaml is out of date: run `{REGENERATE}`"


def test_the_kustomization_lists_every_file_and_nothing_else() -> None:
    files = committed()
    listed = YAML(typ="safe").load(files["kustomization.yaml"])["resources"]
    assert sorted(listed) == sorted(set(files) - {"kustomization.yaml"})
    assert listed[0] == "namespace.yaml", "the namespace is created before what goes into it"
