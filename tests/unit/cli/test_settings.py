"""Every HELMRELEASE_* variable the CLI reads: a good value sets it, a bad one exits 2 naming it, an empty one is
the default; and a bad variable breaks only the subcommand that reads it."""

from __future__ import annotations

import argparse
import ast
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helmrelease.adapters.git import PASSWORD_VARIABLE, USERNAME_VARIABLE
from helmrelease.cli import build_parser, main, parse
from helmrelease.cli.diff import LocalFile
from helmrelease.cli.settings import ENV_PREFIX, CliSettings
from helmrelease.reconcile.settings import OperatorSettings

PACKAGE = Path(__file__).resolve().parents[3] / "operator" / "helmrelease"


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Each runnable subcommand as its argv prefix, nested groups (``images filter``) included."""
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        yield prefix
    for group in groups:
        for name, sub in group.choices.items():
            yield from subcommands(sub, (*prefix, name))


def subparser(argv: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in argv:
        [group] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = group.choices[name]
    return parser


#: The settings model of each subcommand that has one, from the parser itself.
MODELS: dict[tuple[str, ...], type[CliSettings]] = {
    argv: model
    for argv in subcommands(build_parser())
    if (model := subparser(argv).get_default("settings_model")) is not None
}
#: The positional arguments a subcommand needs to parse at all.
REQUIRED: dict[tuple[str, ...], list[str]] = {
    (command,): ["web"] for command in ("reconcile", "suspend", "resume", "history", "diff")
}
#: Every variable the CLI reads, with each subcommand and field that reads it (the cluster flags have several).
READERS: list[tuple[str, tuple[str, ...], str]] = [
    (variable, argv, name) for argv, model in MODELS.items() for name, variable in model.variables().items()
]
READER_IDS = [f"{variable}-{'-'.join(argv)}" for variable, argv, _ in READERS]


def command(argv: tuple[str, ...], *more: str) -> list[str]:
    return [*argv, *REQUIRED.get(argv, []), *more]


@dataclass(frozen=True)
class Row:
    good: str
    expected: object
    bad: str
    message: str


POSITIVE_INT = "must be a positive integer, not {!r}"
NOT_EMPTY = "must not be empty, not {!r}"
BOOLEAN = "must be true or false (or 1/0, yes/no), not {!r}"
LIST = "must be a comma-separated list without empty items, not {!r}"

TABLE: dict[str, Row] = {
    "HELMRELEASE_NAMESPACES": Row("team-a, team-b", ("team-a", "team-b"), "team-a,,team-b", LIST),
    "HELMRELEASE_WORKERS": Row("8", 8, "abc", POSITIVE_INT),
    "HELMRELEASE_RESYNC_INTERVAL": Row("60.5", 60.5, "0", "must be a positive number of seconds, not {!r}"),
    "HELMRELEASE_HELM": Row("/opt/helm3", "/opt/helm3", " ", NOT_EMPTY),
    "HELMRELEASE_STATE_DIR": Row("/data/state", Path("/data/state"), " ", NOT_EMPTY),
    "HELMRELEASE_DEFAULT_GIT_REF": Row("main", "main", " ", NOT_EMPTY),
    "HELMRELEASE_MAX_INDEX_SIZE": Row("64", 64, "0", "must be a positive integer, not {!r}"),
    "HELMRELEASE_CHART_TIMEOUT": Row("45", 45.0, "-1", "must be a positive number of seconds, not {!r}"),
    "HELMRELEASE_GIT_SSH_KEY": Row("/etc/git/identity", Path("/etc/git/identity"), " ", NOT_EMPTY),
    "HELMRELEASE_GIT_KNOWN_HOSTS": Row("/etc/git/known_hosts", Path("/etc/git/known_hosts"), " ", NOT_EMPTY),
    "HELMRELEASE_GIT_PROTOCOLS": Row(
        "https",
        ("https",),
        "https,ext",
        "must be a comma-separated list of https, ssh, http, git, file, not {!r}",
    ),
    "HELMRELEASE_INSECURE_REGISTRIES": Row("lab:5000,oci.lab", ("lab:5000", "oci.lab"), ",", LIST),
    "HELMRELEASE_REQUIRE_SERVICE_ACCOUNT": Row("yes", True, "maybe", BOOLEAN),
    "HELMRELEASE_NO_ADOPT": Row("TRUE", True, "2", BOOLEAN),
    "HELMRELEASE_NO_DRIFT_DETECTION": Row("1", True, "off", BOOLEAN),
    "HELMRELEASE_LOG_FORMAT": Row("json", "json", "xml", "must be one of text, json, not {!r}"),
    "HELMRELEASE_LOG_LEVEL": Row(
        "debug", "DEBUG", "verbose", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {!r}"
    ),
    "HELMRELEASE_LIVENESS": Row(
        "http://0.0.0.0:8080/healthz",
        "http://0.0.0.0:8080/healthz",
        "0.0.0.0:8080",
        "must be an http:// URL such as http://0.0.0.0:8080/healthz, not {!r}",
    ),
    "HELMRELEASE_WATCH_STALL_AFTER": Row("90", 90.0, "-1", "must be a positive number of seconds, not {!r}"),
    "HELMRELEASE_METRICS_PORT": Row(
        "0", 0, "65536", "must be a TCP port, 0 to 65535 (0 turns the endpoint off), not {!r}"
    ),
    "HELMRELEASE_PEERING": Row("ops", "ops", " ", NOT_EMPTY),
    "HELMRELEASE_PRIORITY": Row("-10", -10, "high", "must be an integer, not {!r}"),
    "HELMRELEASE_KUBECONFIG": Row("/etc/kube/config", Path("/etc/kube/config"), " ", NOT_EMPTY),
    "HELMRELEASE_CONTEXT": Row("prod", "prod", " ", NOT_EMPTY),
    "HELMRELEASE_NAMESPACE": Row("team-a", "team-a", " ", NOT_EMPTY),
    "HELMRELEASE_ALL_NAMESPACES": Row("yes", True, "maybe", BOOLEAN),
    "HELMRELEASE_OUTPUT": Row("yaml", "yaml", "xml", "must be one of table, json, yaml, not {!r}"),
    "HELMRELEASE_DIFF_OUTPUT": Row("json", "json", "table", "must be one of diff, json, yaml, not {!r}"),
    "HELMRELEASE_TIMEOUT": Row("2m", 120.0, "soon", "must be a duration such as 30s, 5m or 1h30m, not {!r}"),
    "HELMRELEASE_FORCE": Row("true", True, "maybe", BOOLEAN),
    "HELMRELEASE_RESET": Row("1", True, "maybe", BOOLEAN),
    "HELMRELEASE_OFFLINE": Row("1", True, "maybe", BOOLEAN),
    "HELMRELEASE_VALUES_FROM_FILE": Row(
        "ConfigMap/base=v.yaml",
        (LocalFile("ConfigMap", None, "base", "values.yaml", Path("v.yaml")),),
        "base=v.yaml",
        "must be KIND/[NAMESPACE/]NAME[:KEY]=PATH with KIND ConfigMap or Secret, not {!r}",
    ),
    "HELMRELEASE_BASE": Row("main.yaml", Path("main.yaml"), " ", NOT_EMPTY),
    "HELMRELEASE_SELECT": Row("web", "web", " ", NOT_EMPTY),
    "HELMRELEASE_SHARD": Row(
        " team-a ",
        "team-a",
        "Team_A",
        "must be lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 "
        "characters, not {!r}",
    ),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, _, _ in READERS:
        monkeypatch.delenv(variable, raising=False)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What the CLI prints when it refuses ``argv`` (with status 2)."""
    with pytest.raises(SystemExit) as raised:
        parse(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_the_table_has_a_row_for_every_variable_the_cli_reads() -> None:
    assert sorted(TABLE) == sorted({variable for variable, _, _ in READERS})


@pytest.mark.parametrize(("variable", "argv", "name"), READERS, ids=READER_IDS)
def test_a_good_value_is_the_setting(
    variable: str, argv: tuple[str, ...], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, TABLE[variable].good)
    assert getattr(parse(command(argv)).settings, name) == TABLE[variable].expected


@pytest.mark.parametrize(("variable", "argv", "name"), READERS, ids=READER_IDS)
def test_a_bad_value_exits_2_naming_the_variable(
    variable: str,
    argv: tuple[str, ...],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = TABLE[variable]
    monkeypatch.setenv(variable, row.bad)
    assert (
        usage_error(command(argv), capsys)
        == f"helmrelease: error: {variable}: {row.message.format(row.bad)}\n"
    )


@pytest.mark.parametrize(("variable", "argv", "name"), READERS, ids=READER_IDS)
def test_an_empty_value_is_the_default(
    variable: str, argv: tuple[str, ...], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "")
    field = MODELS[argv].model_fields[name]
    assert getattr(parse(command(argv)).settings, name) == field.get_default(call_default_factory=True)


FLAG_ROWS = [reader for reader in READERS if not MODELS[reader[1]].flag(reader[2]).switch]
FLAG_IDS = [f"{variable}-{'-'.join(argv)}" for variable, argv, _ in FLAG_ROWS]


@pytest.mark.parametrize(("variable", "argv", "name"), FLAG_ROWS, ids=FLAG_IDS)
def test_the_same_bad_value_from_a_flag_names_the_flag(
    variable: str,
    argv: tuple[str, ...],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = TABLE[variable]
    monkeypatch.setenv(variable, row.good)
    option = MODELS[argv].flag(name).names[0]
    message = row.message.format([row.bad] if MODELS[argv].flag(name).repeatable else row.bad)
    assert (
        usage_error(command(argv, f"{option}={row.bad}"), capsys)
        == f"helmrelease: error: {option}: {message}\n"
    )


@pytest.mark.parametrize(("variable", "argv", "name"), FLAG_ROWS, ids=FLAG_IDS)
def test_a_flag_wins_over_a_bad_variable(
    variable: str, argv: tuple[str, ...], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = TABLE[variable]
    monkeypatch.setenv(variable, row.bad)
    option = MODELS[argv].flag(name).names[0]
    assert getattr(parse(command(argv, f"{option}={row.good}")).settings, name) == row.expected


def test_every_bad_value_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HELMRELEASE_WORKERS", "abc")
    monkeypatch.setenv("HELMRELEASE_NO_ADOPT", "maybe")
    assert usage_error(["run", "--priority", "high"], capsys).splitlines() == [
        "helmrelease: error: HELMRELEASE_WORKERS: must be a positive integer, not 'abc'",
        "helmrelease: error: HELMRELEASE_NO_ADOPT: must be true or false (or 1/0, yes/no), not 'maybe'",
        "helmrelease: error: --priority: must be an integer, not 'high'",
    ]


@pytest.mark.parametrize(
    ("argv", "variable", "value", "name", "expected"),
    [
        pytest.param(
            ["run", "-A"], "HELMRELEASE_NAMESPACES", "team-a", "namespaces", (), id="all-namespaces"
        ),
        pytest.param(["run", "--standalone"], "HELMRELEASE_PEERING", "ops", "peering", None, id="standalone"),
        pytest.param(
            ["run", "-n", "a", "-n", "b"], "HELMRELEASE_NAMESPACES", "c", "namespaces", ("a", "b"), id="n"
        ),
    ],
)
def test_switches_that_turn_a_variable_off(
    argv: list[str], variable: str, value: str, name: str, expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(parse(argv).settings, name) == expected


def test_the_defaults_are_the_operators_own() -> None:
    assert parse(["run"]).settings.operator_settings() == OperatorSettings()


@pytest.mark.parametrize("argv", [argv for argv in subcommands(build_parser()) if argv not in MODELS])
def test_a_subcommand_without_settings_ignores_bad_variables(
    argv: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, row in TABLE.items():
        monkeypatch.setenv(variable, row.bad)
    required = {
        ("images", "scan"): ["-"],
        ("images", "filter"): ["semver:*"],
        ("images", "update"): [".", "--namespace", "a", "--name", "b", "--container", "c", "--tag", "1"],
    }
    args = parse([*argv, *required.get(argv, [])])
    assert not hasattr(args, "settings")


def test_images_filter_works_with_garbage_in_every_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, row in TABLE.items():
        monkeypatch.setenv(variable, row.bad)
    monkeypatch.setattr(sys, "stdin", io.StringIO("1.0.0\nv2.1.0\nlatest\n"))
    assert main(["images", "filter", "semver:*"]) == 0
    assert capsys.readouterr().out.split() == ["v2.1.0", "1.0.0"]


@pytest.mark.parametrize("argv", list(MODELS))
def test_every_flag_of_a_settings_subcommand_is_a_setting(argv: tuple[str, ...]) -> None:
    """So each flag also reads its variable: only help and the switches that turn a setting off stand apart."""
    model = MODELS[argv]
    options = {action.dest for action in subparser(argv)._actions if action.option_strings}
    assert options - set(model.model_fields) <= {"help", "all_namespaces", "standalone"}
    assert "help" in options


@pytest.mark.parametrize("argv", list(MODELS))
def test_help_names_every_variable_and_says_empty_is_unset(argv: tuple[str, ...]) -> None:
    text = " ".join(subparser(argv).format_help().split())
    assert "an empty variable counts as unset" in text
    for variable in MODELS[argv].variables().values():
        assert f"env {variable})" in text


def test_no_code_reads_a_helmrelease_variable_but_the_settings_models() -> None:
    """No ``os.environ["HELMRELEASE_..."]`` outside the models: the package's only such names are the prefix and
    the variables git's askpass helper is given (set for the child process, never read as configuration)."""
    names = {
        node.value
        for module in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(ENV_PREFIX)
    }
    assert names == {ENV_PREFIX, USERNAME_VARIABLE, PASSWORD_VARIABLE}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"workers": 0}, "workers must be at least 1, not 0", id="zero-workers"),
        pytest.param({"resync_interval": 0.0}, "resync_interval must be positive", id="zero-resync"),
        pytest.param({"watch_stall_after": 0.0}, "watch_stall_after must be positive", id="zero-stall-bound"),
        pytest.param({"chart_timeout": 0.0}, "chart_timeout must be positive", id="zero-chart-timeout"),
    ],
)
def test_the_operator_settings_refuse_what_would_hang(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorSettings(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "environment", "stdin", "code", "out", "err"),
    [
        pytest.param(
            ["run"],
            {"HELMRELEASE_WORKERS": "0"},
            "",
            2,
            "",
            "helmrelease: error: HELMRELEASE_WORKERS: must be a positive integer, not '0'\n",
            id="run-with-zero-workers",
        ),
        pytest.param(
            ["run", "--workers", "0"],
            {},
            "",
            2,
            "",
            "helmrelease: error: --workers: must be a positive integer, not '0'\n",
            id="run-with-zero-workers-flag",
        ),
        pytest.param(
            ["images", "filter", "semver:*"],
            {"HELMRELEASE_WORKERS": "abc"},
            "1.0.0\n2.0.0\n",
            0,
            "2.0.0\n1.0.0\n",
            "",
            id="images-filter-with-a-bad-unrelated-variable",
        ),
    ],
)
def test_the_console_command_as_a_user_runs_it(
    argv: list[str], environment: dict[str, str], stdin: str, code: int, out: str, err: str
) -> None:
    """The real process: exit status and exactly these lines, no traceback."""
    base = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    result = subprocess.run(
        [sys.executable, "-m", "helmrelease", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **environment},
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (code, out, err)
