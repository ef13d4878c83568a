"""The sidecar's flags become configuration, and ``images list`` turns scans into records and a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.automation.fakes import FakeKube, FakeRegistry, at, release

from helmrelease.adapters.git import Author, SshCredentials
from helmrelease.adapters.registry import BasicCredentials, DockerConfigError, Platform
from helmrelease.automation.inspect import inspect_releases
from helmrelease.cli import build_parser
from helmrelease.cli.image_policy import (
    _config,
    git_writeback,
    host_path,
    operator_credentials,
    registry_config,
    webhook_token,
)
from helmrelease.cli.images import list_records, list_table
from helmrelease.images.reference import CanonicalName

APP = "reg.example.com/team/app"


def parse(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["image-policy", *flags])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Reg.Example.com:5000=/etc/ca.pem", ("reg.example.com:5000", Path("/etc/ca.pem")), id="port"
        ),
        pytest.param(" host = ca.pem ", ("host", Path("ca.pem")), id="spaces"),
        pytest.param("host=/a=b.pem", ("host", Path("/a=b.pem")), id="equals-in-path"),
    ],
)
def test_host_path(text: str, expected: tuple[str, Path]) -> None:
    assert host_path(text) == expected


@pytest.mark.parametrize("text", ["host", "=path", "host=", " = "])
def test_host_path_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not HOST=PATH"):
        host_path(text)


@given(
    host=st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
    path=st.from_regex(r"/[a-zA-Z0-9_./=-]{0,30}", fullmatch=True),
)
def test_host_path_round_trips(host: str, path: str) -> None:
    assert host_path(f"{host}={path}") == (host, Path(path))


def test_defaults() -> None:
    args = parse()
    assert (args.interval, args.namespace, args.health_port, args.metrics_port, args.once) == (
        300.0,
        [],
        8081,
        9090,
        False,
    )
    config = registry_config(args)
    assert config.platform == Platform("linux", "amd64")
    assert config.insecure_hosts == frozenset()
    assert config.manifest_cache_size == config.config_cache_size == 100_000
    assert git_writeback(args) is None


def test_registry_flags(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    args = parse(
        "--insecure-registry",
        "Localhost:5000",
        "--registry-ca",
        f"reg.example.com={ca}",
        "--platform",
        "linux/arm64/v8",
        "--registry-concurrency",
        "32",
        "--registry-rps",
        "500",
        "--registry-cache-size",
        "5000",
    )
    config = registry_config(args)
    assert config.insecure_hosts == frozenset({"localhost:5000"})
    assert dict(config.ca_bundles) == {"reg.example.com": "-----BEGIN CERTIFICATE-----\n"}
    assert config.platform == Platform("linux", "arm64", "v8")
    assert (config.concurrency, config.requests_per_second, config.burst) == (32, 500.0, 32)
    assert (config.config_cache_size, config.manifest_cache_size) == (5000, 5000)


def test_the_tag_recheck_period_and_the_state_dir(tmp_path: Path) -> None:
    assert _config(parse()).settings.tag_recheck_period == 86400.0
    args = parse("--tag-recheck-period", "3600", "--state-dir", str(tmp_path))
    assert _config(args).settings.tag_recheck_period == 3600.0
    assert args.state_dir == tmp_path


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--interval", "0"], id="zero-interval"),
        pytest.param(["--health-port", "70000"], id="bad-port"),
        pytest.param(["--registry-concurrency", "0"], id="zero-concurrency"),
        pytest.param(["--registry-rps", "0"], id="zero-rate"),
        pytest.param(["--registry-rps", "nan"], id="rate-not-a-number"),
        pytest.param(["--health-port", "http"], id="port-not-a-number"),
        pytest.param(["--log-format", "xml"], id="bad-log-format"),
        pytest.param(["--tag-recheck-period", "0"], id="zero-recheck-period"),
    ],
)
def test_bad_flags_are_usage_errors(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse(*flags)
    assert raised.value.code == 2
    assert f"argument {flags[0]}: " in capsys.readouterr().err


def test_operator_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"reg.example.com": {"username": "u", "password": "p"}}}))
    store = operator_credentials(config)
    assert store.credentials_for(CanonicalName("reg.example.com", "team/app")) == BasicCredentials("u", "p")
    config.write_text("{")
    with pytest.raises(DockerConfigError, match="is not JSON"):
        operator_credentials(config)


def test_git_flags(tmp_path: Path) -> None:
    key, hosts = tmp_path / "id", tmp_path / "known_hosts"
    args = parse(
        "--git-url",
        "ssh://git@git.example.com/fleet.git",
        "--git-branch",
        "main",
        "--git-path",
        "clusters/prod/",
        "--git-author",
        "Image Bot <bot@example.com>",
        "--git-ssh-key",
        str(key),
        "--git-known-hosts",
        str(hosts),
        "--git-writeback-all",
        "--state-dir",
        str(tmp_path),
    )
    writeback = git_writeback(args)
    assert writeback is not None
    assert (writeback.path, writeback.author, writeback.all_releases) == (
        "clusters/prod",
        Author("Image Bot", "bot@example.com"),
        True,
    )
    repository = writeback.repository
    assert repository.worktree == tmp_path / "git" / "worktree"
    remote = repository.remote  # type: ignore[attr-defined]
    assert (remote.url, remote.branch) == ("ssh://git@git.example.com/fleet.git", "main")
    assert remote.credentials == SshCredentials(key, hosts, "yes")


def test_an_ssh_key_without_known_hosts_trusts_the_first_host_key(tmp_path: Path) -> None:
    writeback = git_writeback(parse("--git-url", "ssh://git@h/r.git", "--git-ssh-key", str(tmp_path / "id")))
    assert writeback is not None
    assert writeback.repository.remote.credentials.host_key_checking == "accept-new"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--git-path", "x"], "need --git-url", id="path-without-url"),
        pytest.param(["--git-writeback-all"], "need --git-url", id="all-without-url"),
        pytest.param(
            ["--git-url", "file:///r", "--git-path", "../x"], "not a file path inside", id="path-escapes"
        ),
        pytest.param(
            ["--git-url", "file:///r", "--git-branch", "a..b"], "not a branch name", id="bad-branch"
        ),
        pytest.param(["--git-url", "https://u:p@h/r.git"], "not in the repository URL", id="password-in-url"),
    ],
)
def test_bad_git_flags(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        git_writeback(parse(*flags))


# --- images list ----------------------------------------------------------------------------------------


async def test_list_records_and_table() -> None:
    kube = FakeKube().add(
        release(
            "web",
            {"image": {"repository": APP, "tag": "1.0.0"}},
            {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:~1.0"},
        ),
        release("api", {"image": f"{APP}:1.0.5"}, {"fluxcd.io/locked": "true"}, namespace="other"),
        release("db", {"image": f"{APP}@sha256:{'a' * 64}", "x": {"image": "reg.example.com/missing:1"}}),
        release("private", {"image": f"{APP}:1.0.0"}, {"image.helm.fluxcd.io/pull-secret": "nope"}),
    )
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(2), "1.1.0": at(3)}})

    reports = await inspect_releases(kube, registry, namespaces=("apps", "other"))
    records = list_records(reports)

    summary = [
        (r["namespace"], r["name"], r["container"], r["mode"], r["latest"], r["update"], r["reason"])
        for r in records
    ]
    assert summary == [
        ("apps", "db", "chart-image", "manual", "1.1.0", None, "NotAutomatable"),
        ("apps", "db", "x", "manual", None, None, "Error"),
        ("apps", "private", "chart-image", "manual", None, None, "Error"),
        ("apps", "web", "chart-image", "automated", "1.0.5", "1.0.5", "UpdateAvailable"),
        ("other", "api", "chart-image", "locked", "1.1.0", "1.1.0", "UpdateAvailable"),
    ]
    assert records[2]["detail"].startswith("Secret apps/nope named by image.helm.fluxcd.io/pull-secret")
    table = list_table(records).splitlines()
    assert table[0].split() == ["RELEASE", "CONTAINER", "IMAGE", "POLICY", "MODE", "LATEST", "STATUS"]
    assert table[4].split() == [
        "apps/web",
        "chart-image",
        f"{APP}:1.0.0",
        "semver:~1.0",
        "automated",
        "1.0.5",
        "update",
        "to",
        "1.0.5",
    ]
    column = table[0].index("CONTAINER")
    assert all(row[column - 1] == " " and row[column] != " " for row in table)
    assert kube.patches == []


async def test_list_shows_paused_set_back_and_pinned_images() -> None:
    digest = "sha256:" + "b" * 64
    semver = {"fluxcd.io/automated": "true", "fluxcd.io/tag.chart-image": "semver:~1.0"}
    kube = FakeKube().add(
        release(
            "paused",
            {"image": f"{APP}:1.0.0"},
            {**semver, "image.helm.fluxcd.io/paused.chart-image": "1.0.0 set by kubectl-edit at T"},
        ),
        release(
            "setback",
            {"image": f"{APP}:1.0.0"},
            {**semver, "image.helm.fluxcd.io/written.chart-image": "1.0.5"},
        ),
        release(
            "pinned",
            {"image": f"{APP}:1.0.0"},
            {**semver, "image.helm.fluxcd.io/pin-digest.chart-image": "true"},
        ),
    )
    registry = FakeRegistry({APP: {"1.0.0": at(1), "1.0.5": at(2)}}, digests={APP: {"1.0.5": digest}})
    records = list_records(await inspect_releases(kube, registry, namespaces=("apps",)))
    assert [(r["name"], r["paused"], r["update"], r["reason"], r["detail"]) for r in records] == [
        (
            "paused",
            "1.0.0 set by kubectl-edit at T",
            None,
            "Paused",
            "paused: 1.0.0 set by kubectl-edit at T",
        ),
        ("pinned", None, f"1.0.5@{digest}", "UpdateAvailable", "update to 1.0.5"),
        (
            "setback",
            None,
            None,
            "SetBack",
            "set back to 1.0.0 from 1.0.5; the sidecar pauses it",
        ),
    ]


def test_the_sidecar_serves_the_shard_it_is_given() -> None:
    assert parse().shard is None
    assert parse("--shard", "team-a").shard == "team-a"


def test_a_bad_shard_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse("--shard", "Team_A")
    assert raised.value.code == 2
    assert "lowercase letters, digits and '-'" in capsys.readouterr().err


# --- webhooks -----------------------------------------------------------------------------------------


def test_webhooks_are_off_by_default() -> None:
    assert webhook_token(parse()) is None


def test_the_webhook_token_is_read_from_its_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret\n")
    args = parse("--webhook-port", "9292", "--webhook-token-file", str(token_file))
    assert webhook_token(args) == "s3cret"
    assert args.webhook_settle == 0.2


@pytest.mark.parametrize(
    ("flags", "content", "message"),
    [
        (("--webhook-port", "9292"), None, "needs --webhook-token-file"),
        (("--webhook-token-file", "TOKEN"), "x", "needs --webhook-port"),
        (("--webhook-port", "9292", "--webhook-token-file", "TOKEN"), " \n", "holds no webhook token"),
        (
            ("--webhook-port", "9292", "--webhook-token-file", "TOKEN", "--once"),
            "x",
            "does nothing with --once",
        ),
    ],
)
def test_webhook_flags_that_cannot_work_are_refused(
    tmp_path: Path, flags: tuple[str, ...], content: str | None, message: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    args = parse(*(str(token_file) if flag == "TOKEN" else flag for flag in flags))
    with pytest.raises(ValueError, match=message):
        webhook_token(args)


def test_a_missing_token_file_is_an_os_error(tmp_path: Path) -> None:
    args = parse("--webhook-port", "9292", "--webhook-token-file", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError):
        webhook_token(args)


@pytest.mark.parametrize("text", ["-1", "inf", "nan", "soon"])
def test_a_settle_time_must_be_seconds(text: str) -> None:
    with pytest.raises(SystemExit):
        parse("--webhook-settle", text)
