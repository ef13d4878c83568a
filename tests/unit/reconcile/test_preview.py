"""``reconcile.preview``: a HelmRelease rendered with the pass's own chart fetch and values composition."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.unit.reconcile.fakes import FakeCharts, NoUrls

from helmrelease.adapters.kube import NotFound
from helmrelease.api.resource import parse_helmrelease
from helmrelease.reconcile.inputs import Inputs, MissingSource
from helmrelease.reconcile.preview import LocalSources, render_release


class FakeTemplate:
    """Renders the values it gets as JSON, so a test sees exactly what would reach helm."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.redact: Callable[[str], str] | None = None

    async def template(
        self, release: str, namespace: str, chart: str | Path, values: Mapping[str, Any], *, is_upgrade: bool
    ) -> str:
        self.calls.append((release, namespace, is_upgrade))
        return json.dumps(values, sort_keys=True)

    async def manifest(self, release: str, namespace: str) -> str | None:
        return None

    def redacting(self, redact: Callable[[str], str]) -> FakeTemplate:
        self.redact = redact
        return self


def helmrelease(**spec: Any) -> Any:
    return parse_helmrelease(
        {
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "chart": {"repository": "https://charts.example/", "name": "app", "version": "1.0.0"},
                **spec,
            },
        }
    )


def inputs() -> Inputs:
    return Inputs(NoUrls(), state_dir=Path("/nonexistent"), default_git_ref="master", git_ssh_key=None)


async def test_values_are_composed_in_the_passes_order_and_secret_values_are_masked(tmp_path: Path) -> None:
    sources = LocalSources()
    sources.add("ConfigMap", "apps", "base", "values.yaml", "message: from-configmap\nreplicas: 2\n")
    sources.add("Secret", "apps", "creds", "values.yaml", "password: very-secret-value\n")
    hr = helmrelease(
        valuesFrom=[{"configMapKeyRef": {"name": "base"}}, {"secretKeyRef": {"name": "creds"}}],
        values={"replicas": 3},
    )
    helm = FakeTemplate()
    rendering = await render_release(
        hr, inputs=inputs(), charts=FakeCharts(tmp_path), helm=helm, reader=sources, is_upgrade=True
    )
    assert json.loads(rendering.manifest) == {
        "message": "from-configmap",
        "password": "very-secret-value",
        "replicas": 3,
    }
    assert helm.calls == [("apps-web", "apps", True)]
    assert (rendering.release, rendering.namespace, rendering.chart_revision) == ("apps-web", "apps", "1.0.0")
    assert "very-secret-value" not in rendering.masker(rendering.manifest)
    assert helm.redact is rendering.masker


async def test_an_optional_source_that_was_not_given_is_skipped_and_a_required_one_fails(
    tmp_path: Path,
) -> None:
    optional = helmrelease(
        valuesFrom=[{"configMapKeyRef": {"name": "absent", "optional": True}}], values={"a": 1}
    )
    rendering = await render_release(
        optional,
        inputs=inputs(),
        charts=FakeCharts(tmp_path),
        helm=FakeTemplate(),
        reader=LocalSources(),
        is_upgrade=False,
    )
    assert json.loads(rendering.manifest) == {"a": 1}
    required = helmrelease(valuesFrom=[{"secretKeyRef": {"name": "absent"}}])
    with pytest.raises(MissingSource, match=r"Secret absent key values\.yaml"):
        await render_release(
            required,
            inputs=inputs(),
            charts=FakeCharts(tmp_path),
            helm=FakeTemplate(),
            reader=LocalSources(),
            is_upgrade=False,
        )


async def test_local_sources_answer_like_the_api() -> None:
    sources = LocalSources({("ConfigMap", "apps", "x"): {"k": "v"}})
    assert await sources.config_map_data("apps", "x") == {"k": "v"}
    with pytest.raises(NotFound, match="--values-from-file Secret/apps/x"):
        await sources.secret_data("apps", "x")
