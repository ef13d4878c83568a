"""Log setup: an API server outage is one line per failed request, not one per retry of it.

kopf's real API client and the kubernetes client (with its urllib3 transport) run against servers that fail on
demand, with logging configured as both processes configure it, and the test reads what a person would read.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import kmock
import kopf
import pytest
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import auth
from kopf._cogs.clients.errors import APIServerError
from kopf._cogs.structs import credentials

from helmrelease.adapters.kube import ApiUnavailable, KubeClient, api_client
from helmrelease.cli.logs import KOPF_OBJECT_LOGGER, RetryAttemptFilter, configure_logging

LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) +(?P<logger>\S+): (?P<message>.*)$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("kubernetes", "urllib3", "aiohttp.access")}
    objects = logging.getLogger(KOPF_OBJECT_LOGGER)
    filters = objects.filters[:]
    yield
    root.handlers[:], root.level = handlers, level
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
    objects.filters[:] = filters


def lines(stderr: str) -> list[tuple[str, str, str]]:
    """(level, logger, message) of each line."""
    return [(m["level"], m["logger"], m["message"]) for m in map(LINE.match, stderr.splitlines()) if m]


@pytest.fixture
async def failing_apiserver() -> AsyncIterator[str]:
    """A server that answers every request with a 503, as kube-apiserver does while it cannot serve."""
    async with kmock.RawHandler() as mock, kmock.Server(mock) as server:
        mock["get"] << 503 << {"kind": "Status", "code": 503, "message": "the server is shutting down"}
        yield str(server.url).rstrip("/")


async def test_kopf_logs_a_failed_request_once_and_its_final_failure(
    failing_apiserver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text", "INFO")
    vault = credentials.Vault()
    await vault.populate({"test": credentials.ConnectionInfo(server=failing_apiserver)})
    token = auth.vault_var.set(vault)
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = [0, 0, 0]  # four attempts, at once
    try:
        with pytest.raises(APIServerError):
            await kopf_api.get(
                "/apis/helm.fluxcd.io/v1/helmreleases",
                settings=settings,
                logger=logging.getLogger("kopf.test"),
            )
    finally:
        await vault.close()
        auth.vault_var.reset(token)
    logged = [(level, message.split(":")[0]) for level, name, message in lines(capsys.readouterr().err)]
    assert logged == [
        ("WARNING", "Request attempt #1/4 failed; will retry"),
        ("ERROR", "Request attempt #4/4 failed; escalating"),
    ]


def test_a_retried_request_of_an_object_is_no_event(capsys: pytest.CaptureFixture[str]) -> None:
    """kopf posts its object logger's WARNINGs and ERRORs as Events; the retry lines are marked to be skipped."""
    configure_logging("text", "INFO")
    seen: list[logging.LogRecord] = []

    class Poster(logging.Handler):  # where kopf's Event poster sits: on the object logger itself
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    objects = logging.getLogger(KOPF_OBJECT_LOGGER)
    poster = Poster()
    objects.addHandler(poster)
    try:
        objects.error(
            "Request attempt #1/9 failed; will retry: PATCH https://api/x -> ClientConnectorError()"
        )
        objects.error(
            "Request attempt #2/9 failed; will retry: PATCH https://api/x -> ClientConnectorError()"
        )
        objects.error(
            "Request attempt #9/9 failed; escalating: PATCH https://api/x -> ClientConnectorError()"
        )
    finally:
        objects.removeHandler(poster)
    assert [(r.levelname, getattr(r, "k8s_skip", False)) for r in seen] == [
        ("WARNING", True),
        ("ERROR", False),
    ]
    assert [level for level, _, _ in lines(capsys.readouterr().err)] == ["WARNING", "ERROR"]


async def test_the_kubernetes_clients_transport_retries_are_not_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """urllib3 logs three "Retrying" WARNINGs for each failed call: the adapter's error is the one line."""
    configure_logging("text", "INFO")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: connections are refused
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    client = KubeClient(api_client(tmp_path / "kubeconfig"))
    with pytest.raises(ApiUnavailable, match="Connection refused"):
        await client.namespace_exists("apps")
    assert lines(capsys.readouterr().err) == []


@pytest.mark.parametrize(
    ("message", "level", "after", "skipped"),
    [
        pytest.param(
            "Request attempt #1/9 failed; will retry: GET /x -> E()",
            logging.ERROR,
            "WARNING",
            True,
            id="first",
        ),
        pytest.param(
            "Request attempt #5/9 failed; will retry: GET /x -> E()", logging.ERROR, "DEBUG", True, id="later"
        ),
        pytest.param(
            "Request attempt #3 failed; will retry: GET /x -> E()", logging.ERROR, "DEBUG", True, id="endless"
        ),
        pytest.param(
            "Request attempt #9/9 failed; escalating: GET /x -> E()", logging.ERROR, "ERROR", False, id="last"
        ),
        pytest.param(
            "Request attempt #1/9 failed; will retry: GET /x",
            logging.WARNING,
            "WARNING",
            False,
            id="not-error",
        ),
        pytest.param("Handler 'r' failed with an exception", logging.ERROR, "ERROR", False, id="other"),
    ],
)
def test_retry_attempts_relevelled(message: str, level: int, after: str, skipped: bool) -> None:
    record = logging.LogRecord("kopf._cogs.clients.watching", level, __file__, 1, message, None, None)
    RetryAttemptFilter().filter(record)
    assert (record.levelname, bool(getattr(record, "k8s_skip", False))) == (after, skipped)
