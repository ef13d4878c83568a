"""Log setup shared by `helmrelease run` and `helmrelease image-policy`: text for people, JSON for log pipelines."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, Final

# Attributes every LogRecord has; anything else was passed in `extra=` and belongs in the JSON object.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with kopf's object context (`extra`) kept as fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


#: What both processes log unless told otherwise (``--log-format``, ``--log-level``).
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
DEFAULT_LOG_LEVEL = "INFO"


#: kopf's line for a failed API request it will try again (``kopf._cogs.clients.api.request``); the last attempt
#: says "escalating" instead. Tests fail if kopf's wording changes.
_KOPF_RETRY: Final = re.compile(r"^Request attempt #(\d+)(?:/\d+)? failed; will retry: ")
#: kopf's object logger: its records also become Events on the object, unless marked ``k8s_skip``.
KOPF_OBJECT_LOGGER: Final = "kopf.objects"


class RetryAttemptFilter(logging.Filter):
    """One line per failed API request of kopf's, however often kopf tries it again.

    kopf retries a failed request up to eight times within a minute and logs every attempt at ERROR, on the object's
    logger also as an Event: an outage of a few seconds filled the log with errors. The first attempt becomes a
    WARNING (the request failed; a retry is coming), the attempts after it DEBUG, and none of them an Event. The
    last attempt's line ("escalating") is left alone, at ERROR: then kopf gives up on the request.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or record.exc_info:
            return True
        match = _KOPF_RETRY.match(record.getMessage())
        if match is None:
            return True
        record.levelno = logging.WARNING if match.group(1) == "1" else logging.DEBUG
        record.levelname = logging.getLevelName(record.levelno)
        record.k8s_skip = True  # kopf's Event poster skips records marked so
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


def configure_logging(log_format: str, level: str = DEFAULT_LOG_LEVEL) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    retries = RetryAttemptFilter()
    handler.addFilter(retries)  # every logger kopf retries on reaches this handler
    objects = logging.getLogger(KOPF_OBJECT_LOGGER)
    objects.filters[:] = [f for f in objects.filters if not isinstance(f, RetryAttemptFilter)]
    objects.addFilter(retries)  # on the object logger itself too, before kopf's Event poster sees the record
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The kubernetes client logs every request at DEBUG and some at INFO; they drown the operator's own lines.
    for noisy in ("kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Its transport, urllib3, logs each of its three retries of a failed call as a WARNING ("Retrying (...) after
    # connection broken by ..."): the adapter says once that the call failed, and why.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
