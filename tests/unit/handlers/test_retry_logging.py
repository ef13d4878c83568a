"""kopf's lines for planned outcomes: re-levelled and kept out of Events; real exceptions stay ERROR."""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path

import pytest
from kopf._core.actions import execution

from helmrelease.handlers.operator import build_registry
from helmrelease.handlers.retry_logging import (
    EVERY_EVENT_HANDLERS,
    KOPF_OBJECT_LOGGER,
    PlannedOutcomeFilter,
    install,
)
from helmrelease.reconcile.settings import OperatorSettings


def record(message: str, *, level: int = logging.ERROR, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(KOPF_OBJECT_LOGGER, level, __file__, 1, message, None, exc_info)


@pytest.mark.parametrize(
    ("message", "level", "exc", "after", "skipped"),
    [
        (
            "Handler 'reconcile/spec' failed temporarily: ConfigMap apps/v not found",
            logging.ERROR,
            False,
            "WARNING",
            True,
        ),
        ("Timer 'resync' failed temporarily: helm is busy", logging.ERROR, False, "WARNING", True),
        (
            "Handler 'reconcile' failed permanently: Invalid HelmRelease: spec.values: ...",
            logging.ERROR,
            False,
            "INFO",
            True,
        ),
        (
            "Handler 'reconcile' failed with an exception and will try again in 60 seconds: boom",
            logging.ERROR,
            True,
            "ERROR",
            False,
        ),
        ("Handler 'reconcile' failed temporarily: but with a traceback", logging.ERROR, True, "ERROR", False),
        ("Handler 'reconcile' succeeded.", logging.INFO, False, "INFO", False),
        ("Handler 'metrics' succeeded.", logging.INFO, False, "DEBUG", False),
        ("Handler 'secret_changed' succeeded.", logging.INFO, False, "DEBUG", False),
        ("Handler 'metrics' failed temporarily: x", logging.ERROR, False, "WARNING", True),
        ("Request attempt #1/9 failed; will retry", logging.ERROR, False, "ERROR", False),
    ],
)
def test_planned_outcomes_are_relevelled_and_not_posted(
    message: str, level: int, exc: bool, after: str, skipped: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=KOPF_OBJECT_LOGGER)
    entry = record(message, level=level, exc=exc)
    assert PlannedOutcomeFilter().filter(entry)
    assert entry.levelname == after
    assert entry.levelno == logging.getLevelName(after)
    assert bool(getattr(entry, "k8s_skip", False)) is skipped


def test_a_relevelled_line_below_the_configured_level_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=KOPF_OBJECT_LOGGER)
    assert not PlannedOutcomeFilter().filter(record("Handler 'r' failed permanently: x"))
    assert PlannedOutcomeFilter().filter(record("Handler 'r' failed temporarily: x"))


def test_an_every_event_success_is_dropped_unless_debugging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=KOPF_OBJECT_LOGGER)
    assert not PlannedOutcomeFilter().filter(record("Handler 'metrics' succeeded.", level=logging.INFO))
    assert PlannedOutcomeFilter().filter(record("Handler 'reconcile' succeeded.", level=logging.INFO))


def test_every_event_handlers_are_the_registered_on_event_handlers(tmp_path: Path) -> None:
    registry = build_registry(OperatorSettings(state_dir=tmp_path), None)
    watching = {handler.id for handler in registry._watching.get_all_handlers()}
    assert watching == set(EVERY_EVENT_HANDLERS)


def test_install_is_idempotent() -> None:
    install()
    install()
    filters = logging.getLogger(KOPF_OBJECT_LOGGER).filters
    assert sum(isinstance(f, PlannedOutcomeFilter) for f in filters) == 1


def test_kopf_still_words_planned_outcomes_as_the_filter_expects() -> None:
    # If this fails after a kopf upgrade, adapt retry_logging._PLANNED to kopf's new wording.
    source = inspect.getsource(execution.execute_handler_once)
    assert 'logger.error(f"{handler} failed temporarily: {str(e) or repr(e)}")' in source
    assert 'logger.error(f"{handler} failed permanently: {str(e) or repr(e)}")' in source
    assert "logger.exception(msg)" in source
    assert (
        str(execution.Handler.__str__(type("H", (), {"id": "reconcile/spec"})()))
        == "Handler 'reconcile/spec'"
    )  # type: ignore[arg-type]
