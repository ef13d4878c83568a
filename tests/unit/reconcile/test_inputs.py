"""The inputs of a reconcile pass that can be checked without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helmrelease.api.spec import ChartFileSelector
from helmrelease.reconcile.inputs import MissingSource, directory_digest, read_chart_file, sources_of


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, set(), id="none"),
        pytest.param(
            {"valueFileSecrets": [{"name": "legacy"}]}, {("apps", "Secret", "legacy")}, id="deprecated"
        ),
        pytest.param(
            {
                "valuesFrom": [
                    {"configMapKeyRef": {"name": "cm"}},
                    {"secretKeyRef": {"name": "s", "namespace": "x"}},
                ]
            },
            {("apps", "ConfigMap", "cm"), ("x", "Secret", "s")},
            id="both-kinds",
        ),
        pytest.param(
            {
                "valuesFrom": [
                    {"externalSourceRef": {"url": "http://x"}},
                    {"chartFileRef": {"path": "a.yaml"}},
                ]
            },
            set(),
            id="not-in-the-cluster",
        ),
        pytest.param(
            {"valuesFrom": ["garbage", {"configMapKeyRef": "garbage"}]}, set(), id="malformed-is-ignored"
        ),
    ],
)
def test_sources_of(spec: dict[str, Any], expected: set[tuple[str, str, str]]) -> None:
    assert sources_of("apps", spec) == expected


def test_directory_digest_follows_content_and_names_only(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("name: app\n")
    (tmp_path / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    first = directory_digest(tmp_path)
    assert first == directory_digest(tmp_path)
    (tmp_path / "templates" / "cm.yaml").write_text("kind: ConfigMap # changed\n")
    assert directory_digest(tmp_path) != first
    (tmp_path / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    assert directory_digest(tmp_path) == first
    (tmp_path / "templates" / "cm.yaml").rename(tmp_path / "templates" / "renamed.yaml")
    assert directory_digest(tmp_path) != first


@pytest.mark.parametrize(
    ("path", "error"),
    [
        pytest.param("values-prod.yaml", None, id="inside"),
        pytest.param("missing.yaml", "does not exist", id="missing"),
        pytest.param("link.yaml", "outside the chart", id="symlink-out"),
    ],
)
def test_chart_file_values(tmp_path: Path, path: str, error: str | None) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values-prod.yaml").write_text("replicas: 3\n")
    (tmp_path / "secret.yaml").write_text("password: x\n")
    (chart / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    source = ChartFileSelector.model_construct(path=path, optional=False)
    if error is None:
        assert read_chart_file(chart, source) == "replicas: 3\n"
        return
    with pytest.raises(MissingSource, match=error):
        read_chart_file(chart, source)
