"""The helm adapter: every helm call the operator makes goes through `HelmCommand`.

`HelmCommand` runs helm its own way: an argument vector without a shell, an explicit environment, its own process
group that is terminated (then killed) when the caller is cancelled or a deadline passes, values in a private file.
Mutating commands (install, upgrade, rollback, test, uninstall, pull) get their argument lists from pure
functions here, per helm major version: pyhelm3's builders mix flags of both majors and have bugs. For the read
commands (the status of test hooks, history, values, the manifest) it uses what pyhelm3 does well, their argument
lists and the parsing of their output, through `Pyhelm3Reads`, whose one override is pyhelm3's `run`, signature
kept, so those commands run through `HelmCommand.execute` too.

Failures become one family of typed errors, classified once from stderr by a table of patterns.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyhelm3

from helmrelease.adapters import process
from helmrelease.adapters.process import (
    ProcessResult,
    inherited_environment,
    private_directory,
    write_private_file,
)

# ---- Errors


class HelmError(Exception):
    """A failed helm or chart source command; `detail` is the trimmed tail of its stderr.

    Values and credentials reach helm and git only through private files or the environment, never argv, so
    nothing of ours is echoed back here (a chart's own `fail` message is the chart's to word).
    """

    #: Caused by the cluster, not by what the release asks for: the same command may succeed later, unchanged.
    cluster_side: ClassVar[bool] = False

    def __init__(self, operation: str, detail: str, returncode: int | None = None) -> None:
        super().__init__(f"{operation}: {detail}" if detail else operation)
        self.operation = operation
        self.detail = detail
        self.returncode = returncode

    @property
    def cause(self) -> str:
        """What went wrong without helm's framing (`Error: UPGRADE FAILED: `), for a message that already says
        which action failed."""
        return _FRAMING.sub("", self.detail).strip() or self.operation


#: helm's own framing of an error, at the start of a line.
_FRAMING = re.compile(r"^(Error: )?((INSTALLATION|UPGRADE|ROLLBACK|UNINSTALLATION) FAILED: )?", re.MULTILINE)


class ChartNotFound(HelmError):
    """The chart, its version, the git ref or the chart's path does not exist at the source."""


class RepositoryUnreachable(HelmError):
    """The chart repository, registry or git server could not be reached (DNS, connection, TLS).

    Install, upgrade, rollback, test and uninstall read the chart from disk and talk to nobody but the API
    server, so for them this is the cluster being unreachable: cluster-side.
    """

    cluster_side = True


class Unauthorized(HelmError):
    """The chart repository, registry or git server refused our credentials (401/403)."""


class RenderFailed(HelmError):
    """The chart did not render: a template error, `fail`, or values that break the chart's schema."""


class ReleaseLocked(HelmError):
    """Another install/upgrade/rollback of the release is in progress (or was interrupted: `pending-*`)."""

    cluster_side = True


class ReleaseNotFound(HelmError):
    """The release does not exist (or has no deployed revision to upgrade or roll back)."""


class Timeout(HelmError):
    """Helm waited `--timeout` for resources, or the command overran our own deadline and was stopped."""


class InvalidResource(HelmError):
    """The API server (or helm's OpenAPI validation) rejected a rendered object: invalid, immutable field."""


class NamespaceNotFound(HelmError):
    """The target namespace does not exist; we never create it."""


class Conflict(HelmError):
    """An object exists and belongs to someone else: another release, or another server-side apply manager."""


class Forbidden(HelmError):
    """The API server denied the (impersonated) user an action: RBAC of a tenant's service account."""


class ClusterUnreachable(HelmError):
    """Helm could not talk to the Kubernetes API server at all."""

    cluster_side = True


class ClusterProblem(HelmError):
    """The cluster refused for a reason of its own, which can clear without a change to the release: a quota
    exceeded, the Service IP range full, an admission webhook that could not be called, an overloaded or
    restarting API server (429, 5xx, etcd timeouts), a concurrent write to the same object."""

    cluster_side = True


class Cancelled(HelmError):
    """Helm reported its context as cancelled (it received a termination signal)."""


class ReleaseTooLarge(HelmError):
    """The release does not fit in the one Secret Helm stores each revision in (1 MiB, compressed)."""

    def __init__(self, operation: str, detail: str, returncode: int | None = None) -> None:
        super().__init__(operation, f"{RELEASE_TOO_LARGE}: {detail}", returncode)


#: Helm's own message says only "Too long"; this says what to do.
RELEASE_TOO_LARGE = (
    "the release is too large for Helm's release storage (one Secret of at most 1 MiB per revision, holding "
    "the compressed chart, values and manifest); keep large data out of the values, in a ConfigMap or Secret "
    "the chart mounts"
)


class TestFailed(HelmError):
    """A test hook of the release finished unsuccessfully."""

    __test__ = False  # a domain error, not a pytest test class


ErrorTable = Sequence[tuple[re.Pattern[str], type[HelmError]]]


def _pattern(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE | re.MULTILINE)


# First match wins, so the order encodes precedence: helm nests causes ("UPGRADE FAILED: ...: cause"), and
# some phrases appear in several kinds of failure ("not a valid chart repository or cannot be reached: 401").
# Every pattern is exercised by stderr samples of helm v3 and v4 in tests/unit/adapters/test_helm_errors.py.
HELM_ERRORS: ErrorTable = (
    # Before InvalidResource: the apiserver calls an oversized release Secret "invalid".
    (_pattern(r"Secret \"sh\.helm\.release\.v1\.[^\"]+\" is invalid: data: Too long"), ReleaseTooLarge),
    (_pattern(r"another operation \(install/upgrade/rollback\) is in progress"), ReleaseLocked),
    (_pattern(r"kubernetes cluster unreachable"), ClusterUnreachable),
    # --- the cluster's fault or the configuration's: the same API status codes carry both, so the texts decide.
    # A webhook that answered "no" judged the rendered objects: configuration (ahead of the webhook row below).
    (
        _pattern(
            r"admission webhook \"[^\"]+\" denied the request",
            r"validatingadmissionpolicy '[^']+' with binding '[^']+' denied request",
        ),
        InvalidResource,
    ),
    (
        _pattern(
            r"\bexceeded quota: ",  # "<kind> \"x\" is forbidden: exceeded quota: ...": ahead of Forbidden
            r"failed to allocate a serviceip",  # "... is invalid: spec.clusterIPs: Internal error ...": ahead of Invalid
            r"\brange is full\b",
            r"failed calling webhook",  # the webhook is down or erred, with failurePolicy Fail
            r"the server is currently unable to handle the request",  # 503
            r"the server has received too many requests",  # 429
            r"the server was unable to return a response in the time allotted",  # 504
            r"request did not complete within requested timeout",
            r"etcdserver: ",  # request timed out, leader changed, too many requests
            r"internal error occurred: ",  # 500
            r"the object has been modified; please apply your changes to the latest version",  # 409, a race
        ),
        ClusterProblem,
    ),
    # --- end of the cluster-side block
    (_pattern(r"namespaces \"[^\"]+\" not found"), NamespaceNotFound),
    (_pattern(r"release: not found", r"has no deployed releases"), ReleaseNotFound),
    (_pattern(r"\bis forbidden: "), Forbidden),
    (
        _pattern(
            r"\b40[13] (unauthorized|forbidden)\b",
            r"status code 40[13]\b",
            r"basic credential not found",
            r"\bdenied: ",
        ),
        Unauthorized,
    ),
    (
        _pattern(
            r"connection refused",
            r"connection reset by peer",
            r"tls handshake timeout",
            r"http2: client connection lost",
            r"use of closed network connection",
            r"broken pipe",
            r"no such host",
            r"i/o timeout",
            r"client\.timeout exceeded",
            r"network is unreachable",
            r"tls: ",
            r"x509: ",
            r"server gave http response to https client",
        ),
        RepositoryUnreachable,
    ),
    (
        _pattern(
            r"chart \"[^\"]+\"( version \"[^\"]+\")? not found",
            r"no chart (name|version) found",
            r"path \"[^\"]+\" not found",
            r"on source: \S+: not found$",  # OCI: "... on source: <host>/<repository>:<tag>: not found"
            r": 404 ",
            r"not a valid chart repository",  # reachable, authorized, but no index.yaml there
        ),
        ChartNotFound,
    ),
    (
        _pattern(
            r"rendered manifests contain a resource that already exists",
            r"invalid ownership metadata",
            r"cannot re-?use a name that is still in use",
            r"conflict occurred while applying",
            r"apply failed with \d+ conflicts?",
        ),
        Conflict,
    ),
    (
        _pattern(
            r"execution error at",
            r"parse error at",
            r"template: \S+:\d+",
            r"values don't meet the specifications of the schema",
            r"error converting yaml to json",
            r"failed to render",
        ),
        RenderFailed,
    ),
    (
        _pattern(
            r"\bis invalid\b",
            r"may not change once set",
            r"field is immutable",
            r"error validating data",
            r"unable to build kubernetes objects",
            r"resource mapping not found",
        ),
        InvalidResource,
    ),
    (_pattern(r"\bpod \S+ failed\b"), TestFailed),
    (_pattern(r"context deadline exceeded", r"timed out waiting for the condition"), Timeout),
    (_pattern(r"context canceled"), Cancelled),
)

_CREDENTIALS_IN_URL = re.compile(r"(?<=://)[^/@\s]+@")
# Warnings, helm v4's structured log lines (which repeat the final error), klog lines, `repo update` chatter.
_NOISE = re.compile(r"^(WARNING:|walk\.go:|level=\w+ msg=|[WI]\d{4} |Hang tight|Update Complete)")


def trim_stderr(stderr: str, limit: int = 1000) -> str:
    """The last useful lines of stderr, at most `limit` characters, with credentials in URLs masked.

    Helm ends with the error; warnings and klog lines before it only crowd the condition message a user reads.
    """
    lines = [line.strip() for line in stderr.splitlines()]
    useful = [line for line in lines if line and not _NOISE.match(line)] or [line for line in lines if line]
    text = _CREDENTIALS_IN_URL.sub("***@", "\n".join(useful))
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def classify(stderr: str, table: ErrorTable = HELM_ERRORS) -> type[HelmError]:
    """The error class of the first pattern of `table` found in `stderr`; the base class when none matches."""
    for pattern, error in table:
        if pattern.search(stderr):
            return error
    return HelmError


def error_from_stderr(
    operation: str, stderr: str, returncode: int | None, table: ErrorTable = HELM_ERRORS
) -> HelmError:
    """The typed error for a failed command: classified on the whole stderr, described by its trimmed tail."""
    return classify(stderr, table)(operation, trim_stderr(stderr), returncode)


# ---- Processes and private files


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    deadline: float,
    grace: float,
    operation: str,
    cwd: Path | None = None,
) -> ProcessResult:
    """`process.run` with helm's error for a deadline: SIGTERM first, so helm can record the failed operation.

    Raises `Timeout` after `deadline` seconds; re-raises `CancelledError` once the process group is gone.
    """
    try:
        return await process.run(argv, env=env, cwd=cwd, deadline=deadline, grace=grace)
    except TimeoutError:
        raise Timeout(operation, f"did not finish within {deadline:.0f}s and was stopped") from None


#: What helm's YAML reader refuses raw ("control characters are not allowed": DEL, C1, U+FFFE, U+FFFF)
#: or would fold into a space (NEL, U+2028, U+2029), plus the BOM and surrogates: written as JSON escapes,
#: which YAML reads back unchanged. Everything else is written as UTF-8 itself: YAML rejects the surrogate
#: pairs that ``ensure_ascii`` would make of a character outside the BMP (an emoji).
_YAML_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")


def values_json(values: Mapping[str, Any]) -> bytes:
    """``values`` as JSON that helm's YAML parser reads back exactly (a values file is YAML to helm)."""
    text = json.dumps(values, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda match: f"\\u{ord(match[0]):04x}", text).encode("utf-8")


@contextlib.contextmanager
def private_values_file(parent: Path, values: Mapping[str, Any]) -> Iterator[Path]:
    """Values may hold secrets: helm reads them from a 0600 file in a private directory, removed after."""
    with private_directory(parent) as directory:
        path = directory / "values.json"
        write_private_file(path, values_json(values), 0o600)
        yield path


# ---- Settings, versions, options


class HelmMajor(enum.IntEnum):
    V3 = 3
    V4 = 4


_VERSION = re.compile(r"^v?(\d+)\.\d+")


def parse_helm_version(text: str) -> HelmMajor:
    """The major version from `helm version --template {{.Version}}` (`v4.3.1`, `v3.22.0+gabc`, `v4.3`)."""
    match = _VERSION.match(text.strip())
    if match is None or int(match.group(1)) not in {major.value for major in HelmMajor}:
        raise HelmError("version", f"unsupported helm version {text.strip()!r}: helm v3 or v4 is required")
    return HelmMajor(int(match.group(1)))


@dataclass(frozen=True)
class HelmSettings:
    """How to run helm: binary, private HELM_*_HOME under `home`, cluster, private temp root, deadlines."""

    home: Path
    temp_root: Path
    executable: str = "helm"
    kubeconfig: Path | None = None
    kube_context: str | None = None
    read_timeout: float = 60.0
    # helm's --timeout bounds each Kubernetes wait, not the whole command: our deadline adds this margin.
    timeout_margin: float = 30.0
    termination_grace: float = 10.0

    def environment(
        self, inherited: Mapping[str, str], extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = inherited_environment(inherited)
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
            TMPDIR=str(self.temp_root),
        )
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        env.update(extra or {})
        return env


@dataclass(frozen=True)
class Impersonation:
    """Act as a tenant's ServiceAccount.

    Only the user is named: for a `system:serviceaccount:` user the apiserver adds the account's groups itself, so
    the operator needs `impersonate` on serviceaccounts alone, not the cluster-admin-strong right to impersonate any
    group.
    """

    namespace: str
    service_account: str

    def arguments(self) -> list[str]:
        return ["--kube-as-user", f"system:serviceaccount:{self.namespace}:{self.service_account}"]


class DeployAction(enum.Enum):
    """The reconcile core decides between install and upgrade; helm never guesses (no `upgrade --install`)."""

    INSTALL = "install"
    UPGRADE = "upgrade"


@dataclass(frozen=True)
class DeployOptions:
    """Flags of an install or upgrade, as the HelmRelease spec gives them."""

    timeout: int = 300
    version: str | None = None
    wait: bool = False
    force: bool = False
    skip_crds: bool = False
    disable_openapi_validation: bool = False
    reset_values: bool = True  # False: reuse the release's previous values (upgrade only)
    max_history: int = 10
    description: str | None = None
    force_conflicts: bool = False  # server-side apply conflicts; helm v4 only
    #: Labels on the release's storage Secret (`helm --labels`): how the operator marks releases it owns.
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackOptions:
    revision: int | None = None  # None: the previous revision
    timeout: int = 300
    force: bool = False
    recreate: bool = False  # helm v3 only: v4 removed --recreate-pods
    disable_hooks: bool = False
    wait: bool = False
    max_history: int = 10


# ---- Argument lists (pure)


def positional(value: str | Path) -> str:
    """A positional argument that helm cannot mistake for a flag."""
    text = str(value)
    if not text or text.startswith("-"):
        raise ValueError(f"refusing argument {text!r}: empty or starts with '-'")
    return text


def _wait_arguments(major: HelmMajor) -> list[str]:
    # v4 turned --wait into a strategy; "watcher" is kstatus-based readiness, the successor of v3's --wait.
    return ["--wait=watcher" if major is HelmMajor.V4 else "--wait", "--wait-for-jobs"]


def _force_argument(major: HelmMajor) -> str:
    return "--force-replace" if major is HelmMajor.V4 else "--force"


_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$"
)
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


def label_argument(labels: Mapping[str, str]) -> str:
    """`--labels k=v,k2=v2` from Kubernetes label syntax, in which no `,` or `=` can split a pair differently."""
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"{key}={value} is not a valid release label")
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def deploy_arguments(
    major: HelmMajor,
    action: DeployAction,
    release: str,
    namespace: str,
    chart: str | Path,
    values_file: Path,
    options: DeployOptions,
) -> list[str]:
    """`helm install|upgrade` for one release; never `--create-namespace`, never `--install`."""
    arguments = [
        action.value,
        positional(release),
        positional(chart),
        "--namespace",
        positional(namespace),
        "--values",
        str(values_file),
        "--timeout",
        f"{options.timeout}s",
        "--output",
        "json",
    ]
    if options.version:
        arguments += ["--version", options.version]
    if options.wait:
        arguments += _wait_arguments(major)
    if options.force:
        arguments.append(_force_argument(major))
    if options.skip_crds:
        arguments.append("--skip-crds")
    if options.disable_openapi_validation:
        arguments.append("--disable-openapi-validation")
    if options.description:
        arguments += ["--description", options.description]
    if options.force_conflicts and major is HelmMajor.V4:
        arguments.append("--force-conflicts")
    if options.labels:
        arguments += ["--labels", label_argument(options.labels)]
    if action is DeployAction.UPGRADE:
        arguments += ["--history-max", str(options.max_history)]
        arguments.append("--reset-values" if options.reset_values else "--reuse-values")
    return arguments


def template_arguments(
    release: str, namespace: str, chart: str | Path, values_file: Path, *, is_upgrade: bool
) -> list[str]:
    """`helm template` as the release would be installed or upgraded: what `helm get manifest` then shows, so no
    hooks (Helm stores them apart) and no `crds/` (never part of a manifest); client-side, it needs no cluster."""
    arguments = [
        "template",
        positional(release),
        positional(chart),
        "--namespace",
        positional(namespace),
        "--values",
        str(values_file),
        "--no-hooks",
    ]
    if is_upgrade:
        arguments.append("--is-upgrade")
    return arguments


def rollback_arguments(major: HelmMajor, release: str, namespace: str, options: RollbackOptions) -> list[str]:
    arguments = ["rollback", positional(release)]
    if options.revision is not None:
        arguments.append(str(options.revision))
    arguments += [
        "--namespace",
        positional(namespace),
        "--timeout",
        f"{options.timeout}s",
        "--history-max",
        str(options.max_history),
    ]
    if options.wait:
        arguments += _wait_arguments(major)
    if options.force:
        arguments.append(_force_argument(major))
    if options.recreate and major is HelmMajor.V3:
        arguments.append("--recreate-pods")
    if options.disable_hooks:
        arguments.append("--no-hooks")
    return arguments


def release_test_arguments(release: str, namespace: str, timeout: int) -> list[str]:
    return ["test", positional(release), "--namespace", positional(namespace), "--timeout", f"{timeout}s"]


def uninstall_arguments(release: str, namespace: str, timeout: int, keep_history: bool) -> list[str]:
    arguments = [
        "uninstall",
        positional(release),
        "--namespace",
        positional(namespace),
        "--timeout",
        f"{timeout}s",
    ]
    if keep_history:
        arguments.append("--keep-history")
    return arguments


def pull_arguments(
    reference: str, destination: Path, *, version: str | None, plain_http: bool, ca_file: Path | None
) -> list[str]:
    """`helm pull` of a packaged chart; credentials come from config files in the environment, never argv."""
    arguments = ["pull", positional(reference), "--destination", str(destination)]
    if version:
        arguments += ["--version", version]
    if plain_http:
        arguments.append("--plain-http")
    if ca_file is not None:
        arguments += ["--ca-file", str(ca_file)]
    return arguments


def repository_update_arguments(major: HelmMajor, name: str) -> list[str]:
    # helm v3 reports a failed index download but exits 0 unless told otherwise; v4 fails, rejects the flag.
    failure_flag = ["--fail-on-repo-update-fail"] if major is HelmMajor.V3 else []
    return ["repo", "update", positional(name), *failure_flag]


# ---- Results (pure parsers of helm's JSON)


@dataclass(frozen=True)
class Release:
    """Where a release stands and which chart it runs."""

    name: str
    namespace: str
    revision: int
    status: str
    chart_name: str
    chart_version: str
    app_version: str
    #: The rendered manifest, when helm printed it (`install|upgrade --output json` does).
    manifest: str = ""


@dataclass(frozen=True)
class Revision:
    """One entry of `helm history`."""

    revision: int
    status: str
    chart: str
    app_version: str
    description: str
    updated: str

    @property
    def rollback_target(self) -> int | None:
        """The revision a rollback revision went back to: helm describes it as ``Rollback to <N>``."""
        match = _ROLLBACK_DESCRIPTION.match(self.description)
        return int(match.group(1)) if match else None


_ROLLBACK_DESCRIPTION = re.compile(r"^Rollback to (\d+)$")


@dataclass(frozen=True)
class TestHook:
    """A test hook resource of a release, so the caller can clean it up (no helm version has `--cleanup`)."""

    __test__ = False  # not a pytest class, despite its name

    kind: str
    name: str
    phase: str


@dataclass(frozen=True)
class TestRun:
    """The outcome of `helm test`: a failed test is an outcome the spec may ignore, not an error."""

    __test__ = False

    passed: bool
    detail: str
    hooks: tuple[TestHook, ...] = ()


def parse_release(document: Mapping[str, Any]) -> Release:
    """A release from the output of `helm install|upgrade --output json`."""
    metadata = (document.get("chart") or {}).get("metadata") or {}
    return Release(
        name=str(document["name"]),
        namespace=str(document.get("namespace", "")),
        revision=int(document["version"]),
        status=str((document.get("info") or {}).get("status", "")),
        chart_name=str(metadata.get("name", "")),
        chart_version=str(metadata.get("version", "")),
        app_version=str(metadata.get("appVersion", "")),
        manifest=str(document.get("manifest") or ""),
    )


def parse_metadata(document: Mapping[str, Any]) -> Release:
    """A release from `helm get metadata --output json` (`helm status` carries no chart metadata)."""
    return Release(
        name=str(document["name"]),
        namespace=str(document.get("namespace", "")),
        revision=int(document["revision"]),
        status=str(document.get("status", "")),
        chart_name=str(document.get("chart", "")),
        chart_version=str(document.get("version", "")),
        app_version=str(document.get("appVersion", "")),
    )


def parse_history(entries: Sequence[Mapping[str, Any]]) -> list[Revision]:
    return [
        Revision(
            revision=int(entry["revision"]),
            status=str(entry.get("status", "")),
            chart=str(entry.get("chart", "")),
            app_version=str(entry.get("app_version", "")),
            description=str(entry.get("description", "")),
            updated=str(entry.get("updated", "")),
        )
        for entry in entries
    ]


def parse_test_hooks(document: Mapping[str, Any]) -> tuple[TestHook, ...]:
    """The test hooks in `helm status --output json`, with the phase of their last run."""
    return tuple(
        TestHook(
            kind=str(hook.get("kind", "")),
            name=str(hook.get("name", "")),
            phase=str((hook.get("last_run") or {}).get("phase", "")),
        )
        for hook in document.get("hooks") or []
        if "test" in (hook.get("events") or [])
    )


def only_package(directory: Path) -> Path:
    """The one chart package `helm pull` wrote into an empty directory."""
    packages = sorted(directory.glob("*.tgz"))
    if len(packages) != 1:
        raise HelmError("pull", f"expected one chart package, helm wrote {[p.name for p in packages]}")
    return packages[0]


def json_document(stdout: bytes) -> Any:
    """The JSON document in helm's stdout; helm v4 may print OCI `Pulled:`/`Digest:` lines before it."""
    lines = stdout.decode().splitlines(keepends=True)
    start = next((index for index, line in enumerate(lines) if line.startswith(("{", "["))), None)
    if start is None:
        raise HelmError("output", "helm printed no JSON document")
    return json.loads("".join(lines[start:]))


# ---- The adapter


class Pyhelm3Reads(pyhelm3.Command):  # type: ignore[misc]  # pyhelm3 ships no type information
    """pyhelm3's read commands, run by a `HelmCommand`: pyhelm3 builds the arguments and parses the output.

    pyhelm3 sends every command it builds through `run`; this override keeps its signature and only replaces how a
    command runs (pyhelm3's own goes through a shell). Nothing else of pyhelm3 is overridden.
    """

    def __init__(self, helm: HelmCommand) -> None:
        super().__init__(executable=helm.settings.executable)
        self._helm = helm

    async def run(self, command: list[str], input: bytes | None = None) -> bytes:
        """Values never travel on stdin here: the commands that would send them are not ours to run."""
        if input is not None:
            raise ValueError("values go through a private file, not stdin")
        return await self._helm.execute(
            [str(part) for part in command], deadline=self._helm.settings.read_timeout
        )


class HelmCommand:
    """One helm binary (v3 or v4, detected once) with its settings, maybe impersonating a ServiceAccount."""

    def __init__(
        self,
        settings: HelmSettings,
        major: HelmMajor,
        impersonation: Impersonation | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self._settings = settings
        self._major = major
        self._impersonation = impersonation
        self._redact = redact
        self._log = logging.getLogger(__name__)
        self._reads = Pyhelm3Reads(self)

    @classmethod
    async def detect(cls, settings: HelmSettings) -> HelmCommand:
        """Ask the binary its version once at startup: argument lists differ between v3 and v4."""
        settings.temp_root.mkdir(parents=True, exist_ok=True)
        result = await run_process(
            [settings.executable, "version", "--template", "{{.Version}}"],
            env=settings.environment(os.environ),
            deadline=settings.read_timeout,
            grace=settings.termination_grace,
            operation="version",
        )
        if result.returncode != 0:
            raise error_from_stderr("version", result.stderr.decode(errors="replace"), result.returncode)
        return cls(settings, parse_helm_version(result.stdout.decode()))

    @property
    def major(self) -> HelmMajor:
        return self._major

    @property
    def settings(self) -> HelmSettings:
        return self._settings

    def impersonating(self, namespace: str, service_account: str) -> HelmCommand:
        """The same helm acting as `system:serviceaccount:<namespace>:<service_account>` (multi-tenancy)."""
        return HelmCommand(
            self._settings, self._major, Impersonation(namespace, service_account), self._redact
        )

    def redacting(self, redact: Callable[[str], str]) -> HelmCommand:
        """The same helm, whose error text goes through `redact` before any error is built from it.

        The API server quotes rejected values back through helm; the caller masks those that came from Secrets.
        """
        return HelmCommand(self._settings, self._major, self._impersonation, redact)

    # ---- running

    async def execute(
        self,
        arguments: Sequence[str],
        *,
        deadline: float,
        extra_environment: Mapping[str, str] | None = None,
        diagnostics_on_stdout: bool = False,
        helm_timeout: int | None = None,
    ) -> bytes:
        """Run `helm <arguments>` with our global flags; stdout on success, a typed `HelmError` otherwise.

        `diagnostics_on_stdout`: the command prints the cause of its failure on stdout (`repo update`).
        `helm_timeout`: the command's own `--timeout`, named when our `deadline` has to stop it.
        """
        argv = [self._settings.executable, *arguments, *self._global_arguments()]
        operation = arguments[0] if arguments else "helm"
        self._log.debug("running %s", " ".join(argv))
        try:
            result = await run_process(
                argv,
                env=self._settings.environment(os.environ, extra_environment),
                deadline=deadline,
                grace=self._settings.termination_grace,
                operation=operation,
            )
        except Timeout:
            if helm_timeout is None:
                raise
            raise Timeout(
                operation,
                f"helm {operation} did not finish within {deadline:.0f}s (its --timeout of {helm_timeout}s plus "
                f"the operator's margin of {self._settings.timeout_margin:.0f}s) and was stopped",
            ) from None
        if result.returncode != 0:
            output = (result.stdout + result.stderr) if diagnostics_on_stdout else result.stderr
            text = output.decode(errors="replace")
            raise error_from_stderr(
                operation, self._redact(text) if self._redact else text, result.returncode
            )
        return result.stdout

    def _global_arguments(self) -> list[str]:
        arguments = []
        if self._settings.kube_context:
            arguments += ["--kube-context", self._settings.kube_context]
        if self._impersonation is not None:
            arguments += self._impersonation.arguments()
        return arguments

    def _deadline(self, helm_timeout: int) -> float:
        return helm_timeout + self._settings.timeout_margin

    # ---- releases

    async def upgrade_install(
        self,
        release: str,
        namespace: str,
        chart: str | Path,
        values: Mapping[str, Any],
        options: DeployOptions,
        *,
        action: DeployAction,
    ) -> Release:
        """Install or upgrade (as the caller decided) `chart`, usually a directory from the chart fetcher."""
        if options.force_conflicts and self._major is HelmMajor.V3:
            self._log.info(
                "forceConflicts ignored for %s/%s: helm v3 has no server-side apply", namespace, release
            )
        with private_values_file(self._settings.temp_root, values) as values_file:
            arguments = deploy_arguments(self._major, action, release, namespace, chart, values_file, options)
            stdout = await self.execute(
                arguments, deadline=self._deadline(options.timeout), helm_timeout=options.timeout
            )
        return parse_release(json_document(stdout))

    async def rollback(self, release: str, namespace: str, options: RollbackOptions) -> None:
        if options.recreate and self._major is HelmMajor.V4:
            self._log.info(
                "rollback.recreate ignored for %s/%s: helm v4 removed --recreate-pods", namespace, release
            )
        await self.execute(
            rollback_arguments(self._major, release, namespace, options),
            deadline=self._deadline(options.timeout),
            helm_timeout=options.timeout,
        )

    async def test(self, release: str, namespace: str, *, timeout_seconds: int = 300) -> TestRun:
        """Run the release's test hooks; a failing test is `TestRun(passed=False)`, other failures raise.

        Neither helm v3 nor v4 cleans test pods up (`--cleanup` is gone): the caller deletes `hooks` if asked.
        """
        try:
            await self.execute(
                release_test_arguments(release, namespace, timeout_seconds),
                deadline=self._deadline(timeout_seconds),
                helm_timeout=timeout_seconds,
            )
        except TestFailed as failure:
            passed, detail = False, failure.detail
        else:
            passed, detail = True, ""
        status = await self._reads.status(positional(release), namespace=positional(namespace))
        return TestRun(passed, detail, parse_test_hooks(status))

    async def uninstall(
        self, release: str, namespace: str, *, timeout_seconds: int = 300, keep_history: bool = False
    ) -> bool:
        """Uninstall; a release that is already gone is success. True when there was something to remove."""
        try:
            await self.execute(
                uninstall_arguments(release, namespace, timeout_seconds, keep_history),
                deadline=self._deadline(timeout_seconds),
                helm_timeout=timeout_seconds,
            )
        except ReleaseNotFound:
            return False
        return True

    async def status(self, release: str, namespace: str) -> Release:
        stdout = await self.execute(
            [
                "get",
                "metadata",
                positional(release),
                "--namespace",
                positional(namespace),
                "--output",
                "json",
            ],
            deadline=self._settings.read_timeout,
        )
        return parse_metadata(json_document(stdout))

    async def history(self, release: str, namespace: str) -> list[Revision]:
        return parse_history(await self._reads.history(positional(release), namespace=positional(namespace)))

    async def get_values(self, release: str, namespace: str, *, all_values: bool = False) -> dict[str, Any]:
        """The user-supplied values of the release (`all_values`: merged with the chart's defaults)."""
        values: dict[str, Any] = await self._reads.get_values(
            positional(release), computed=all_values, namespace=positional(namespace)
        )
        return values

    async def template(
        self,
        release: str,
        namespace: str,
        chart: str | Path,
        values: Mapping[str, Any],
        *,
        is_upgrade: bool,
    ) -> str:
        """The manifest `chart` renders to with `values` (see `template_arguments`), as multi-document YAML."""
        with private_values_file(self._settings.temp_root, values) as values_file:
            stdout = await self.execute(
                template_arguments(release, namespace, chart, values_file, is_upgrade=is_upgrade),
                deadline=self._settings.read_timeout,
            )
        return stdout.decode()

    async def manifest(self, release: str, namespace: str) -> str | None:
        """`helm get manifest` of the release's latest revision as Helm stored it; None when there is no release."""
        try:
            stdout = await self.execute(
                ["get", "manifest", positional(release), "--namespace", positional(namespace)],
                deadline=self._settings.read_timeout,
            )
        except ReleaseNotFound:
            return None
        return stdout.decode()

    async def get_manifest(self, release: str, namespace: str) -> list[dict[str, Any]]:
        """The objects of the release's current manifest (empty documents left out)."""
        documents = await self._reads.get_resources(positional(release), namespace=positional(namespace))
        return [document for document in documents if isinstance(document, dict)]

    # ---- charts

    async def pull_chart(
        self,
        reference: str,
        destination: Path,
        *,
        version: str | None = None,
        plain_http: bool = False,
        ca_file: Path | None = None,
        extra_environment: Mapping[str, str] | None = None,
        deadline: float,
    ) -> Path:
        """Download one packaged chart into the empty directory `destination`; returns the .tgz path."""
        arguments = pull_arguments(
            reference, destination, version=version, plain_http=plain_http, ca_file=ca_file
        )
        await self.execute(arguments, deadline=deadline, extra_environment=extra_environment)
        return only_package(destination)

    async def update_repository(
        self, name: str, *, extra_environment: Mapping[str, str], deadline: float
    ) -> None:
        """Fetch the index of repository `name` from the repositories file named in `extra_environment`."""
        await self.execute(
            repository_update_arguments(self._major, name),
            deadline=deadline,
            extra_environment=extra_environment,
            diagnostics_on_stdout=True,
        )

    async def update_dependencies(self, chart_directory: Path, *, deadline: float) -> None:
        """`helm dependency update`: vendor the chart's declared dependencies into its charts/ directory."""
        await self.execute(["dependency", "update", positional(chart_directory)], deadline=deadline)
