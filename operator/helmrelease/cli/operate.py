"""``helmrelease get | reconcile | suspend | resume | history``: operating HelmReleases, as ``flux`` users expect.

Every command takes kubectl's cluster flags (``--kubeconfig``, ``--context``, ``-n/--namespace``; ``get`` also
``-A``), also read from ``HELMRELEASE_KUBECONFIG``, ``HELMRELEASE_CONTEXT`` and ``HELMRELEASE_NAMESPACE``. The
namespace defaults to the context's, else ``default``, as kubectl's does.

Exit codes: 0 done (``reconcile``: Ready); 1 the answer is no (``reconcile``: handled but not Ready, timed out, or
the HelmRelease is suspended); 2 the question could not be answered (bad flags, no such HelmRelease, the API
server refused or could not be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Annotated, Any, Final, Self, TextIO

from pydantic import BeforeValidator, model_validator

from helmrelease.adapters.kube import KubeClient, KubeError, NotFound, api_client, kubeconfig_namespace
from helmrelease.api.constants import API_VERSION, RECONCILE_REQUEST_ANNOTATION
from helmrelease.api.errors import SpecError
from helmrelease.api.resource import parse_helmrelease
from helmrelease.cli.argtypes import Boolean, Duration, OptionalPath, OptionalText, one_of
from helmrelease.cli.output import OUTPUTS, records_table, render
from helmrelease.cli.settings import CliSettings, flag, switch
from helmrelease.cli.views import (
    HISTORY_COLUMNS,
    get_columns,
    history_records,
    release_record,
    sorted_records,
)
from helmrelease.cli.waiting import Mode, Progress, fresh_token, request_patch, verdict, wait_for_result

EXIT_OK: Final = 0
EXIT_NO: Final = 1
EXIT_ERROR: Final = 2
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_TIMEOUT: Final = 300.0
#: Seconds between two reads of the HelmRelease while waiting (one GET: nothing for an API server).
POLL_INTERVAL: Final = 1.0
SPINNER: Final = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class ClusterSettings(CliSettings):
    """How to reach the cluster, as kubectl's flags say it."""

    kubeconfig: Annotated[
        OptionalPath,
        flag(
            "--kubeconfig", metavar="PATH", help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)"
        ),
    ] = None
    context: Annotated[
        OptionalText, flag("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    ] = None
    namespace: Annotated[
        OptionalText,
        flag(
            "--namespace",
            "-n",
            metavar="NS",
            help="namespace of the HelmRelease (default: the context's namespace, else default)",
        ),
    ] = None

    def resolved_namespace(self) -> str:
        """``-n``, else the kubeconfig context's namespace, else ``default``; raises ``KubeError``."""
        return self.namespace or kubeconfig_namespace(self.kubeconfig, self.context) or DEFAULT_NAMESPACE


Output = Annotated[
    str,
    BeforeValidator(one_of(*OUTPUTS)),
    flag("--output", "-o", metavar="|".join(OUTPUTS), help="a table for people, json or yaml for scripts"),
]


class GetSettings(ClusterSettings):
    all_namespaces: Annotated[
        Boolean, switch("--all-namespaces", "-A", help="HelmReleases of every namespace")
    ] = False
    output: Output = "table"


class ReconcileSettings(ClusterSettings):
    timeout: Annotated[
        Duration,
        flag("--timeout", metavar="DURATION", help="how long to wait for the result, e.g. 90s, 5m (seconds)"),
    ] = DEFAULT_TIMEOUT
    force: Annotated[
        Boolean,
        switch("--force", help="one upgrade even when a failed configuration would wait for a change"),
    ] = False
    reset: Annotated[Boolean, switch("--reset", help="zero the failure and rollback counters first")] = False

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        """argparse keeps the flags apart; this keeps a flag and the other's variable apart too."""
        if self.force and self.reset:
            raise ValueError("--force and --reset exclude each other")
        return self


class HistorySettings(ClusterSettings):
    output: Output = "table"


@contextlib.asynccontextmanager
async def kube_client(settings: ClusterSettings) -> AsyncIterator[KubeClient]:
    api = api_client(settings.kubeconfig, context=settings.context)
    client = KubeClient(api)
    try:
        yield client
    finally:
        await client.close()
        api.close()  # type: ignore[no-untyped-call]


def fail(command: str, message: str, code: int = EXIT_ERROR) -> int:
    print(f"helmrelease {command}: {message}", file=sys.stderr)
    return code


class HelmReleaseMissing(Exception):
    """The HelmRelease a command names does not exist: one line and exit 2, mapped in ``run_command``."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"HelmRelease {namespace}/{name} not found")


def run_command(command: str, work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command's coroutine; an API failure (none reachable, forbidden, ...) or a HelmRelease that is
    not there is one line and exit 2."""
    try:
        return asyncio.run(work())
    except HelmReleaseMissing as error:
        return fail(command, str(error))
    except NotFound as error:
        return fail(command, f"{error}: not found")
    except KubeError as error:
        return fail(command, str(error))


async def read_helmrelease(kube: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await kube.get_helmrelease(namespace, name)
    except NotFound:
        return None


async def require_helmrelease(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """The HelmRelease a command acts on; ``HelmReleaseMissing`` when there is none."""
    obj = await read_helmrelease(kube, namespace, name)
    if obj is None:
        raise HelmReleaseMissing(namespace, name)
    return obj


def _requested_token(obj: Mapping[str, Any]) -> str | None:
    """The reconcile request token the HelmRelease carries now, so a new one is never the same."""
    token = ((obj.get("metadata") or {}).get("annotations") or {}).get(RECONCILE_REQUEST_ANNOTATION)
    return token if isinstance(token, str) else None


# --- get ------------------------------------------------------------------------------------------------------


def run_get(args: argparse.Namespace) -> int:
    settings: GetSettings = args.settings

    async def work() -> int:
        async with kube_client(settings) as kube:
            namespace = None if settings.all_namespaces else settings.resolved_namespace()
            if args.name:
                if namespace is None:
                    return fail("get", "a NAME needs one namespace, not --all-namespaces")
                objects = [await require_helmrelease(kube, namespace, args.name)]
            else:
                try:
                    objects = await kube.list_helmreleases(namespace)
                except NotFound:
                    return fail(
                        "get", f"the cluster serves no {API_VERSION} HelmReleases: is the CRD installed?"
                    )
        records = sorted_records([release_record(obj) for obj in objects])
        if not records and settings.output == "table":
            where = "any namespace" if namespace is None else f"namespace {namespace}"
            print(f"no HelmReleases in {where}", file=sys.stderr)
            return EXIT_OK
        print(
            render(
                records,
                settings.output,
                lambda: records_table(records, get_columns(settings.all_namespaces)),
            )
        )
        return EXIT_OK

    return run_command("get", work)


# --- suspend / resume -----------------------------------------------------------------------------------------


def _suspended(obj: Mapping[str, Any]) -> bool:
    return (obj.get("spec") or {}).get("suspend") is True


def run_suspend(args: argparse.Namespace) -> int:
    settings: ClusterSettings = args.settings

    async def work() -> int:
        async with kube_client(settings) as kube:
            namespace = settings.resolved_namespace()
            obj = await require_helmrelease(kube, namespace, args.name)
            if _suspended(obj):
                print(f"HelmRelease {namespace}/{args.name} is already suspended")
                return EXIT_OK
            stored = await kube.merge_patch_helmrelease(namespace, args.name, {"spec": {"suspend": True}})
        if not _suspended(stored):
            return fail(
                "suspend",
                f"the API server dropped spec.suspend of HelmRelease {namespace}/{args.name}: the cluster's "
                "HelmRelease CRD predates it; apply crds/helmrelease.yaml of this version",
            )
        print(
            f"HelmRelease {namespace}/{args.name} suspended: no helm action, drift correction or image move"
        )
        return EXIT_OK

    return run_command("suspend", work)


def run_resume(args: argparse.Namespace) -> int:
    settings: ClusterSettings = args.settings

    async def work() -> int:
        async with kube_client(settings) as kube:
            namespace = settings.resolved_namespace()
            obj = await require_helmrelease(kube, namespace, args.name)
            token = fresh_token(dt.datetime.now(dt.UTC), _requested_token(obj))
            patch = {**request_patch(token, Mode.RECONCILE), "spec": {"suspend": None}}
            await kube.merge_patch_helmrelease(namespace, args.name, patch)
        was = "resumed" if _suspended(obj) else "was not suspended"
        print(f"HelmRelease {namespace}/{args.name} {was}; reconcile requested ({token})")
        return EXIT_OK

    return run_command("resume", work)


# --- reconcile ------------------------------------------------------------------------------------------------


class ProgressDisplay:
    """A spinner with the latest progress on a terminal; a plain line per change otherwise (logs, pipes)."""

    def __init__(self, stream: TextIO, *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.text = ""
        self._task: asyncio.Task[None] | None = None

    def report(self, progress: Progress) -> None:
        """Show a state on the way; the final one is the command's last line (``verdict``), not repeated here."""
        self.text = progress.line()
        if not self.interactive and not progress.state.final:
            print(self.text, file=self.stream, flush=True)

    async def __aenter__(self) -> ProgressDisplay:
        if self.interactive:
            self._task = asyncio.create_task(self._spin())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.stream.write("\r\033[K")
            self.stream.flush()

    async def _spin(self) -> None:
        for frame in itertools.cycle(SPINNER):
            self.stream.write(f"\r\033[K{frame} {self.text}")
            self.stream.flush()
            await asyncio.sleep(0.1)


def _duration_text(seconds: float) -> str:
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def run_reconcile(args: argparse.Namespace) -> int:
    settings: ReconcileSettings = args.settings
    mode = Mode.FORCE if settings.force else Mode.RESET if settings.reset else Mode.RECONCILE

    async def work() -> int:
        async with kube_client(settings) as kube:
            namespace = settings.resolved_namespace()
            where = f"HelmRelease {namespace}/{args.name}"
            obj = await require_helmrelease(kube, namespace, args.name)
            if _suspended(obj):
                return fail(
                    "reconcile",
                    f"{where} is suspended: resume it first (helmrelease resume {args.name} -n {namespace})",
                    EXIT_NO,
                )
            token = fresh_token(dt.datetime.now(dt.UTC), _requested_token(obj))
            await kube.merge_patch_helmrelease(namespace, args.name, request_patch(token, mode))
            print(f"{where}: {mode} requested ({token})", flush=True)
            display = ProgressDisplay(sys.stdout, interactive=sys.stdout.isatty())
            async with display:
                outcome = await wait_for_result(
                    lambda: read_helmrelease(kube, namespace, args.name),
                    token,
                    mode=mode,
                    wait_seconds=settings.timeout,
                    clock=time.monotonic,
                    sleep=asyncio.sleep,
                    report=display.report,
                    interval=POLL_INTERVAL,
                )
        code, line = verdict(outcome, _duration_text(settings.timeout))
        if outcome.progress.acknowledged is False and not outcome.timed_out:
            line += f" (the operator did not echo the {mode} token: it may not support {mode})"
        print(f"{where}: {line}", file=sys.stdout if code == EXIT_OK else sys.stderr)
        return code

    return run_command("reconcile", work)


# --- history --------------------------------------------------------------------------------------------------


def run_history(args: argparse.Namespace) -> int:
    settings: HistorySettings = args.settings

    async def work() -> int:
        async with kube_client(settings) as kube:
            namespace = settings.resolved_namespace()
            obj = await require_helmrelease(kube, namespace, args.name)
            status = obj.get("status") or {}
            release, target = status.get("releaseName"), status.get("releaseNamespace")
            if not (release and target):
                try:
                    hr = parse_helmrelease(obj)
                except SpecError as error:
                    return fail("history", f"HelmRelease {namespace}/{args.name}: {error}")
                release, target = hr.release_name, hr.target_namespace
            stored = await kube.stored_releases(str(target), str(release))
        records = history_records(stored, obj)
        if not records and settings.output == "table":
            print(f"release {target}/{release} has no revisions", file=sys.stderr)
            return EXIT_OK
        print(render(records, settings.output, lambda: records_table(records, HISTORY_COLUMNS)))
        return EXIT_OK

    return run_command("history", work)


# --- parser ---------------------------------------------------------------------------------------------------


SETTINGS_NOTE: Final = (
    "Every flag also reads the HELMRELEASE_* variable shown with it; a flag wins over its variable, and an empty "
    "variable counts as unset."
)


def _command(
    subparsers: Any, name: str, help: str, model: type[ClusterSettings], handler: Callable[..., int]
) -> argparse.ArgumentParser:
    description = f"{help[:1].upper()}{help[1:]}. {SETTINGS_NOTE}"
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(handler=handler, settings_model=model)
    return parser


def register(subparsers: Any) -> None:
    get = _command(
        subparsers, "get", "list HelmReleases with their readiness, like flux get hr", GetSettings, run_get
    )
    get.add_argument(
        "name", nargs="?", metavar="NAME", help="one HelmRelease (default: all in the namespace)"
    )
    scope = get.add_mutually_exclusive_group()
    GetSettings.add_arguments(get, {"namespace": scope, "all_namespaces": scope})

    reconcile = _command(
        subparsers,
        "reconcile",
        "reconcile a HelmRelease now and wait for the result (exit 0 when Ready)",
        ReconcileSettings,
        run_reconcile,
    )
    reconcile.add_argument("name", metavar="NAME")
    how = reconcile.add_mutually_exclusive_group()
    ReconcileSettings.add_arguments(reconcile, {"force": how, "reset": how})

    for name, help, handler in (
        ("suspend", "stop reconciling a HelmRelease (spec.suspend: true)", run_suspend),
        ("resume", "reconcile a suspended HelmRelease again, starting now", run_resume),
    ):
        parser = _command(subparsers, name, help, ClusterSettings, handler)
        parser.add_argument("name", metavar="NAME")
        ClusterSettings.add_arguments(parser)

    history = _command(
        subparsers,
        "history",
        "the revisions of a HelmRelease's release, and who made each",
        HistorySettings,
        run_history,
    )
    history.add_argument("name", metavar="NAME")
    HistorySettings.add_arguments(history)
