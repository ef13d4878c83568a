"""HelmCommand against a scripted stand-in for the helm binary: what it runs, with which files, how it reads results.

The stand-in records every invocation (argv, environment, the values file's mode and content as helm would see
them) and answers from a script of responses, so each test states exactly what "helm" says.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helmrelease.adapters import helm

INSTALL = helm.DeployAction.INSTALL

FAKE_HELM = """#!{python}
import json, os, stat, sys
from pathlib import Path
here = Path({here!r})
argv = sys.argv[1:]
record = {{"argv": argv, "env": dict(os.environ)}}
if "--values" in argv:
    values = Path(argv[argv.index("--values") + 1])
    record["values_mode"] = stat.S_IMODE(values.stat().st_mode)
    record["values_dir_mode"] = stat.S_IMODE(values.parent.stat().st_mode)
    record["values"] = json.loads(values.read_text())
with (here / "calls.jsonl").open("a") as log:
    log.write(json.dumps(record) + "\\n")
responses = json.loads((here / "responses.json").read_text())
key = " ".join(argv[:2]) if argv[0] in ("get", "repo") else argv[0]
answer = responses.get(key, {{"stdout": "", "stderr": "", "code": 0}})
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("code", 0))
"""


@dataclass
class FakeHelm:
    directory: Path
    settings: helm.HelmSettings

    def respond(self, command: str, *, stdout: str = "", stderr: str = "", code: int = 0) -> None:
        responses = json.loads((self.directory / "responses.json").read_text())
        responses[command] = {"stdout": stdout, "stderr": stderr, "code": code}
        (self.directory / "responses.json").write_text(json.dumps(responses))

    def calls(self) -> list[dict[str, Any]]:
        log = self.directory / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def command(self, major: helm.HelmMajor = helm.HelmMajor.V4) -> helm.HelmCommand:
        return helm.HelmCommand(self.settings, major)


@pytest.fixture
def fake(tmp_path: Path) -> FakeHelm:
    executable = tmp_path / "helm"
    executable.write_text(FAKE_HELM.format(python=sys.executable, here=str(tmp_path)))
    executable.chmod(0o755)
    (tmp_path / "responses.json").write_text("{}")
    settings = helm.HelmSettings(
        home=tmp_path / "home",
        temp_root=tmp_path / "private",
        executable=str(executable),
        kubeconfig=tmp_path / "kubeconfig",
        kube_context="test",
        timeout_margin=5,
    )
    return FakeHelm(tmp_path, settings)


RELEASE_JSON = json.dumps(
    {
        "name": "web",
        "namespace": "team",
        "version": 3,
        "info": {"status": "deployed"},
        "chart": {"metadata": {"name": "app", "version": "0.2.0", "appVersion": "1.0.0"}},
    }
)


@pytest.mark.parametrize(
    ("printed", "expected"),
    [pytest.param("v4.3.1", helm.HelmMajor.V4, id="v4"), pytest.param("v3.22.0", helm.HelmMajor.V3, id="v3")],
)
async def test_detect_asks_the_binary(fake: FakeHelm, printed: str, expected: helm.HelmMajor) -> None:
    fake.respond("version", stdout=printed)
    command = await helm.HelmCommand.detect(fake.settings)
    assert command.major is expected
    assert fake.calls()[0]["argv"][:3] == ["version", "--template", "{{.Version}}"]


async def test_upgrade_passes_values_in_a_private_file_removed_afterwards(fake: FakeHelm) -> None:
    fake.respond("upgrade", stdout=RELEASE_JSON)
    values = {"image": {"tag": "2.0.0"}, "password": "hunter2"}
    options = helm.DeployOptions(timeout=120, wait=True)
    release = await fake.command().upgrade_install(
        "web", "team", "/cache/app", values, options, action=helm.DeployAction.UPGRADE
    )
    assert release == helm.Release("web", "team", 3, "deployed", "app", "0.2.0", "1.0.0")
    [call] = fake.calls()
    assert (call["values_mode"], call["values_dir_mode"], call["values"]) == (0o600, 0o700, values)
    assert "hunter2" not in " ".join(call["argv"])
    assert call["argv"][:3] == ["upgrade", "web", "/cache/app"]
    assert call["argv"][11:13] == ["--wait=watcher", "--wait-for-jobs"]
    assert list(fake.settings.temp_root.iterdir()) == []


async def test_environment_and_global_flags(fake: FakeHelm) -> None:
    fake.respond("get metadata", stdout=json.dumps({"name": "web", "namespace": "team", "revision": 1}))
    await fake.command().impersonating("team", "deployer").status("web", "team")
    [call] = fake.calls()
    env: Mapping[str, str] = call["env"]
    assert env["KUBECONFIG"] == str(fake.settings.kubeconfig)
    assert env["HELM_CONFIG_HOME"] == str(fake.settings.home / "config")
    assert env["TMPDIR"] == str(fake.settings.temp_root)
    assert call["argv"] == [
        "get", "metadata", "web", "--namespace", "team", "--output", "json",
        "--kube-context", "test",
        "--kube-as-user", "system:serviceaccount:team:deployer",
    ]  # fmt: skip


async def test_values_file_is_removed_when_helm_fails(fake: FakeHelm) -> None:
    fake.respond(
        "install", stderr="Error: INSTALLATION FAILED: execution error at (app/x.yaml:1:2): no", code=1
    )
    with pytest.raises(helm.RenderFailed, match="execution error") as failure:
        await fake.command().upgrade_install(
            "web", "team", "/cache/app", {"a": 1}, helm.DeployOptions(), action=helm.DeployAction.INSTALL
        )
    assert failure.value.returncode == 1
    assert failure.value.operation == "install"
    assert list(fake.settings.temp_root.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "stderr"),
    [
        pytest.param(
            "install",
            'Error: INSTALLATION FAILED: Service "web" is invalid: metadata.labels: Invalid value: "hunter2-x"',
            id="install",
        ),
        pytest.param("test", "Error: pod web-test failed: hunter2-x", id="test-detail"),
    ],
)
async def test_a_redacting_command_masks_its_error_text_and_keeps_it_when_impersonating(
    fake: FakeHelm, command: str, stderr: str
) -> None:
    fake.respond(command, stderr=stderr, code=1)
    fake.respond("status", stdout=STATUS_WITH_HOOK)
    tenant = fake.command().redacting(lambda text: text.replace("hunter2-x", "***")).impersonating("t", "sa")
    if command == "test":
        detail = (await tenant.test("web", "team")).detail
    else:
        with pytest.raises(helm.InvalidResource) as failure:
            await tenant.upgrade_install("web", "team", "/c", {}, helm.DeployOptions(), action=INSTALL)
        detail = str(failure.value)
    assert "hunter2" not in detail
    assert "***" in detail
    assert "--kube-as-user" in fake.calls()[0]["argv"]


async def test_pyhelm3_read_commands_run_through_our_runner(fake: FakeHelm) -> None:
    fake.respond("history", stdout=json.dumps([{"revision": 1, "status": "deployed", "chart": "app-0.1.0"}]))
    fake.respond("get values", stdout="null")
    command = fake.command()
    assert [r.revision for r in await command.history("web", "team")] == [1]
    assert await command.get_values("web", "team") == {}
    history, values = fake.calls()
    assert history["argv"][:2] == ["history", "web"]
    assert values["argv"][:3] == ["get", "values", "web"]
    assert values["argv"][-2:] == ["--kube-context", "test"]  # our global flags, not pyhelm3's


async def test_pyhelm3_commands_that_send_values_on_stdin_are_refused(fake: FakeHelm) -> None:
    with pytest.raises(ValueError, match="not stdin"):
        await helm.Pyhelm3Reads(fake.command()).template("x", "y", {"password": "hunter2"})
    assert fake.calls() == []


async def test_manifest_objects(fake: FakeHelm) -> None:
    fake.respond(
        "get manifest", stdout="---\n# Source: a\napiVersion: v1\nkind: ConfigMap\n---\n---\nkind: Service\n"
    )
    objects = await fake.command().get_manifest("web", "team")
    assert [o["kind"] for o in objects] == ["ConfigMap", "Service"]


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        pytest.param("", True, id="uninstalled"),
        pytest.param(
            "Error: uninstall: Release not loaded: web: release: not found", False, id="already-gone"
        ),
    ],
)
async def test_uninstall_of_a_missing_release_is_success(fake: FakeHelm, stderr: str, expected: bool) -> None:
    fake.respond("uninstall", stderr=stderr, code=1 if stderr else 0)
    assert await fake.command().uninstall("web", "team", timeout_seconds=30) is expected


async def test_uninstall_failure_other_than_missing_raises(fake: FakeHelm) -> None:
    fake.respond("uninstall", stderr="Error: Kubernetes cluster unreachable: dial tcp", code=1)
    with pytest.raises(helm.ClusterUnreachable):
        await fake.command().uninstall("web", "team")


STATUS_WITH_HOOK = json.dumps(
    {
        "name": "t",
        "hooks": [{"kind": "Pod", "name": "t-test", "events": ["test"], "last_run": {"phase": "Failed"}}],
    }
)


@pytest.mark.parametrize(
    ("stderr", "passed"),
    [
        pytest.param("", True, id="passed"),
        pytest.param("Error: 1 error occurred:\n\t* pod t-test failed\n", False, id="v3-failed"),
        pytest.param(
            "Error: resource Pod/team/t-test not ready. status: Failed, message: pod t-test failed",
            False,
            id="v4",
        ),
    ],
)
async def test_a_failed_test_is_an_outcome(fake: FakeHelm, stderr: str, passed: bool) -> None:
    fake.respond("test", stderr=stderr, code=1 if stderr else 0)
    fake.respond("status", stdout=STATUS_WITH_HOOK)
    run = await fake.command().test("t", "team", timeout_seconds=60)
    assert run.passed is passed
    assert ("pod t-test failed" in run.detail) is not passed
    assert run.hooks == (helm.TestHook("Pod", "t-test", "Failed"),)
    assert fake.calls()[0]["argv"][:6] == ["test", "t", "--namespace", "team", "--timeout", "60s"]


async def test_a_test_that_cannot_run_raises(fake: FakeHelm) -> None:
    fake.respond("test", stderr="Error: release: not found", code=1)
    with pytest.raises(helm.ReleaseNotFound):
        await fake.command().test("t", "team")


@pytest.mark.parametrize(
    ("major", "flag"),
    [
        pytest.param(helm.HelmMajor.V3, ["--fail-on-repo-update-fail"], id="v3"),
        pytest.param(helm.HelmMajor.V4, [], id="v4"),
    ],
)
async def test_repository_update_reads_its_failure_from_stdout(
    fake: FakeHelm, major: helm.HelmMajor, flag: list[str]
) -> None:
    fake.respond(
        "repo update",
        stdout='...Unable to get an update from the "source" chart repository (http://r):\n'
        "\tfailed to fetch http://r/index.yaml : 401 Unauthorized\n",
        stderr="Error: failed to update the following repositories: [http://r]",
        code=1,
    )
    with pytest.raises(helm.Unauthorized, match="401 Unauthorized"):
        await fake.command(major).update_repository("source", extra_environment={"X": "1"}, deadline=10)
    [call] = fake.calls()
    assert call["argv"][: 3 + len(flag)] == ["repo", "update", "source", *flag]
    assert call["env"]["X"] == "1"


async def test_the_outer_deadline_is_helm_timeout_plus_margin(fake: FakeHelm, tmp_path: Path) -> None:
    """helm ignoring its own --timeout (a hung API call) is stopped by ours, a few seconds later."""
    slow = tmp_path / "slow-helm"
    slow.write_text("#!/bin/sh\nexec sleep 60\n")
    slow.chmod(0o755)
    settings = helm.HelmSettings(
        home=tmp_path / "home", temp_root=tmp_path / "private", executable=str(slow), timeout_margin=1
    )
    started = time.monotonic()
    with pytest.raises(helm.Timeout) as raised:
        await helm.HelmCommand(settings, helm.HelmMajor.V4).rollback(
            "web", "team", helm.RollbackOptions(timeout=1)
        )
    assert 2 <= time.monotonic() - started < 10
    assert raised.value.detail == (
        "helm rollback did not finish within 2s (its --timeout of 1s plus the operator's margin of 1s) and was "
        "stopped"
    )
