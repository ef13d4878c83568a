"""The helm wrapper the crash and replica tests kill at exact points: its log and its gates, on a stand-in helm."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from tests.support.helm_wrapper import AFTER, BEFORE, HelmWrapper, overlaps

FAKE_HELM = """#!/bin/sh
echo "out:$*"
echo "err:$1" >&2
[ "$1" = fail ] && exit 3
exit 0
"""


def wrapper_around_fake(tmp_path: Path) -> HelmWrapper:
    fake = tmp_path / "fake-helm"
    fake.write_text(FAKE_HELM)
    fake.chmod(0o755)
    return HelmWrapper.create(tmp_path / "wrapper", real=str(fake))


def run(wrapper: HelmWrapper, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(wrapper.path), *argv], capture_output=True, text=True, timeout=30, check=False)


def test_an_invocation_passes_output_and_status_through_and_is_logged(tmp_path: Path) -> None:
    wrapper = wrapper_around_fake(tmp_path)
    result = run(wrapper, "upgrade", "rel", "chart", "--namespace", "ns", "--wait")
    failed = run(wrapper, "fail", "x")
    read = run(wrapper, "get", "values", "rel", "-n", "ns")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "out:upgrade rel chart --namespace ns --wait\n",
        "err:upgrade\n",
    )
    assert failed.returncode == 3
    upgrade, fail, get = wrapper.invocations()
    assert (upgrade.subcommand, upgrade.release, upgrade.namespace, upgrade.returncode) == (
        "upgrade",
        "rel",
        "ns",
        0,
    )
    assert upgrade.finished
    assert upgrade.mutating
    assert upgrade.helm_start is not None
    assert upgrade.helm_end is not None
    assert upgrade.end is not None
    assert upgrade.start <= upgrade.helm_start <= upgrade.helm_end <= upgrade.end
    assert (fail.subcommand, fail.returncode) == ("fail", 3)
    assert (get.subcommand, get.release, get.namespace, get.mutating) == ("get", "rel", "ns", False)
    assert [call.pid for call in wrapper.calls("upgrade", release="rel")] == [upgrade.pid]
    assert read.returncode == 0


def test_a_gate_holds_one_matching_invocation_until_opened(tmp_path: Path) -> None:
    wrapper = wrapper_around_fake(tmp_path)
    before = wrapper.arm(BEFORE, "upgrade", release="b")
    after = wrapper.arm(AFTER, "upgrade", release="a")
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [
        threading.Thread(target=lambda name=name: results.__setitem__(name, run(wrapper, "upgrade", name)))
        for name in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    held_before, held_after = before.wait_held(30), after.wait_held(30)
    assert (held_before.release, held_before.helm_start) == ("b", None), "held before the real helm ran"
    assert (held_after.release, held_after.returncode) == ("a", 0), "held after the real helm returned"
    assert not results, "both wait at their gates"
    assert run(wrapper, "upgrade", "b").returncode == 0, "a gate holds one invocation only"
    before.open()
    after.open()
    for thread in threads:
        thread.join(30)
    assert results["a"].returncode == results["b"].returncode == 0
    assert results["a"].stdout == "out:upgrade a\n"
    assert len(wrapper.calls("upgrade", release="b")) == 2


def test_overlaps_are_the_mutating_runs_of_one_release_at_the_same_time(tmp_path: Path) -> None:
    wrapper = wrapper_around_fake(tmp_path)
    gate = wrapper.arm(AFTER, "upgrade", release="r")
    thread = threading.Thread(target=run, args=(wrapper, "upgrade", "r", "--namespace", "ns"))
    thread.start()
    gate.wait_held(30)
    assert overlaps(wrapper.invocations()) == []
    run(wrapper, "rollback", "other", "--namespace", "ns")
    run(wrapper, "history", "r", "--namespace", "ns")
    assert overlaps(wrapper.invocations()) == [], "another release, or a read, is no overlap"
    # A helm run that did not return yet (killed, or held here) counts as running until `killed_at`.
    gate.open()
    thread.join(30)
    upgrade = wrapper.calls("upgrade")[0]
    late = wrapper.calls("history")[0]
    assert overlaps(wrapper.invocations(), mutating_only=False) == [], "the upgrade's helm returned before"
    upgrade.helm_end = None
    pairs = overlaps([upgrade, late], mutating_only=False)
    assert [(first.subcommand, second.subcommand) for first, second in pairs] == [("upgrade", "history")]
