"""kopf's log lines for our planned outcomes, at the level they deserve and without a second Event.

Handlers raise ``kopf.TemporaryError`` for a planned retry (a values ConfigMap not there yet, a release locked by
another operation) and ``kopf.PermanentError`` for a spec that cannot work, always after the reconcile pass has
written the condition and posted its own Event. kopf logs both at ERROR on its object logger, which also posts them
as Events of type Error: every retry looked like a crash and added an Event. This filter, on kopf's object logger,
turns those two lines into a WARNING (a retry is coming: something is still wrong) or an INFO (a permanent outcome
already reported) and keeps them out of Events. Unexpected exceptions are logged by kopf with ``logger.exception``;
they carry a traceback and are left alone, at ERROR.

kopf also logs "Handler 'x' succeeded." at INFO for each run of a handler; for the handlers that run on every watch
event of their kind (``EVERY_EVENT_HANDLERS``) that was a line per status write, ConfigMap and Secret change, saying
nothing, and about a twentieth of the operator's CPU during installs: those are DEBUG.
"""

from __future__ import annotations

import logging
import re
from typing import Final

#: kopf's wording (``kopf._core.actions.execution.execute_handler_once``); tests fail if it changes.
_PLANNED: Final = re.compile(r"^(?:Handler|Timer|Daemon) '[^']+' failed (temporarily|permanently): ")
KOPF_OBJECT_LOGGER: Final = "kopf.objects"
#: The ids of the on-event handlers (`handlers.operator`), which run for every watch event of their kind.
EVERY_EVENT_HANDLERS: Final = ("metrics", "config_map_changed", "secret_changed")
_EVERY_EVENT_SUCCESS: Final = frozenset(f"Handler '{handler}' succeeded." for handler in EVERY_EVENT_HANDLERS)


class PlannedOutcomeFilter(logging.Filter):
    """Re-level kopf's "failed temporarily/permanently" lines, and the on-event handlers' "succeeded"; drop them if
    the new level is not enabled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            if not (isinstance(record.msg, str) and record.msg in _EVERY_EVENT_SUCCESS):
                return True
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if record.levelno != logging.ERROR or record.exc_info:
            return True
        match = _PLANNED.match(record.getMessage())
        if match is None:
            return True
        record.levelno = logging.WARNING if match.group(1) == "temporarily" else logging.INFO
        record.levelname = logging.getLevelName(record.levelno)
        record.k8s_skip = True  # kopf's Event poster skips records marked so
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


def install() -> None:
    """Idempotent; the filter sits on kopf's object logger, so it sees the records before any handler."""
    logger = logging.getLogger(KOPF_OBJECT_LOGGER)
    if not any(isinstance(f, PlannedOutcomeFilter) for f in logger.filters):
        logger.addFilter(PlannedOutcomeFilter())
