"""``helmrelease diff``'s own parts: its flags, how it finds the HelmRelease in a file and the sources beside it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from helmrelease.cli import parse
from helmrelease.cli.argtypes import InvalidValue
from helmrelease.cli.diff import (
    DiffInputError,
    LocalFile,
    add_documented_sources,
    local_file,
    select_helmrelease,
    yaml_documents,
)
from helmrelease.reconcile.preview import LocalSources


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "ConfigMap/base=v.yaml",
            LocalFile("ConfigMap", None, "base", "values.yaml", Path("v.yaml")),
            id="plain",
        ),
        pytest.param(
            "secret/ops/creds:extra.yaml=/x",
            LocalFile("Secret", "ops", "creds", "extra.yaml", Path("/x")),
            id="ns-and-key",
        ),
        pytest.param(
            "configmap/a=b=c",
            LocalFile("ConfigMap", None, "a", "values.yaml", Path("b=c")),
            id="equals-in-path",
        ),
    ],
)
def test_values_from_file_names_an_object_key_and_a_path(text: str, expected: LocalFile) -> None:
    assert local_file(text) == expected


@pytest.mark.parametrize(
    "text", ["ConfigMap/base", "Deployment/x=y", "ConfigMap/=y", "Secret/a/b/c=y", "ConfigMap/x=", "x=y"]
)
def test_a_malformed_values_from_file_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue, match="KIND/"):
        local_file(text)


def test_bad_diff_flags_exit_two_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(["diff", "x", "--offline", "--values-from-file", "nonsense"])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("helmrelease: error: --values-from-file: ")
    )


def test_the_variable_holds_several_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELMRELEASE_VALUES_FROM_FILE", "ConfigMap/a=1.yaml,Secret/b=2.yaml")
    args = parse(["diff", "x", "--offline"])
    assert [(f.kind, f.name) for f in args.settings.values_from_file] == [("ConfigMap", "a"), ("Secret", "b")]


HR = """
apiVersion: helm.fluxcd.io/v1
kind: HelmRelease
metadata: {{name: {name}}}
spec:
  chart: {{repository: https://charts.example/, name: app, version: 1.0.0}}
"""


def test_the_helmrelease_of_a_file_gets_the_default_namespace() -> None:
    documents = yaml_documents(HR.format(name="web") + "---\napiVersion: v1\nkind: ConfigMap\n", "f.yaml")
    hr = select_helmrelease(documents, "f.yaml", None, "apps")
    assert (hr.metadata.namespace, hr.release_name) == ("apps", "apps-web")


def test_a_file_with_several_helmreleases_needs_select() -> None:
    documents = yaml_documents(HR.format(name="web") + "---" + HR.format(name="api"), "f.yaml")
    with pytest.raises(DiffInputError, match=r"2 HelmReleases \(web, api\): pick one with --select"):
        select_helmrelease(documents, "f.yaml", None, "apps")
    assert select_helmrelease(documents, "f.yaml", "api", "apps").metadata.name == "api"
    with pytest.raises(DiffInputError, match="no HelmRelease 'db'"):
        select_helmrelease(documents, "f.yaml", "db", "apps")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a: [", "f.yaml: ", id="not-yaml"),
        pytest.param("a: &a [*a]\n", "f.yaml: it refers to itself", id="self-referring-alias"),
        pytest.param(
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
            ),
            "f.yaml: its YAML aliases expand",
            id="billion-laughs",
        ),
        pytest.param("apiVersion: v1\nkind: ConfigMap\n", "0 HelmReleases", id="no-helmrelease"),
        pytest.param(HR.format(name="web").replace("chart:", "chartx:"), "spec.chart", id="invalid-spec"),
    ],
)
def test_a_file_that_cannot_be_used_says_why(text: str, message: str) -> None:
    with pytest.raises(DiffInputError, match=message):
        select_helmrelease(yaml_documents(text, "f.yaml"), "f.yaml", None, "apps")


async def test_configmaps_and_secrets_in_the_file_are_values_sources() -> None:
    encoded = base64.b64encode(b"password: p4ssw0rd\n").decode()
    documents = yaml_documents(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {values.yaml: 'a: 1'}\n---\n"
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: ops}}\ndata: {{values.yaml: {encoded}}}\n"
        "stringData: {extra.yaml: 'b: 2'}\n",
        "f.yaml",
    )
    sources = LocalSources()
    add_documented_sources(sources, documents, "apps")
    assert await sources.config_map_data("apps", "base") == {"values.yaml": "a: 1"}
    assert await sources.secret_data("ops", "creds") == {
        "values.yaml": "password: p4ssw0rd\n",
        "extra.yaml": "b: 2",
    }


def test_secret_data_that_is_not_base64_is_refused() -> None:
    documents = yaml_documents(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '%%%'}\n", "f.yaml"
    )
    with pytest.raises(DiffInputError, match="Secret apps/s key k: not base64"):
        add_documented_sources(LocalSources(), documents, "apps")
