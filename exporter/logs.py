"""Logging setup: structlog, JSON when stdout is not a terminal (production), console when it is.

Every value in a log line may come from outside (a URL from the config, an error from a server, a
label from a page), so one processor bounds them all: each value is cut to `MAX_VALUE_CHARS` and
credentials in URLs are replaced by `<redacted>`. The same `clean` serves error lines printed by
the command line, so no line anywhere carries a password or a megabyte of junk.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

MAX_VALUE_CHARS = 200
MAX_TRACEBACK_CHARS = 4000
"""A traceback (our own `exception` field) keeps its last characters: the exception is at its end."""
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_PASSTHROUGH = (bool, int, float, type(None))


def redact(text: str) -> str:
    """`text` with the user information of every URL in it (`user:password@`) replaced."""
    return _CREDENTIALS.sub(r"\1<redacted>@", text)


def truncate(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def clean(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Redacted, then truncated: what may be shown of a value that came from outside."""
    return truncate(redact(text), limit)


def _clean_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if key == "exception" and isinstance(value, str):
            text = redact(value)
            event[key] = text if len(text) <= MAX_TRACEBACK_CHARS else "..." + text[-MAX_TRACEBACK_CHARS:]
        elif isinstance(value, str):
            event[key] = clean(value)
        elif not isinstance(value, _PASSTHROUGH):
            text = str(value)
            if len(text) > MAX_VALUE_CHARS or _CREDENTIALS.search(text):
                event[key] = clean(text)
    return event


class _ToStructlog(logging.Handler):
    """Libraries' standard-library records (aiohttp's on a malformed request, for one) as one clean
    structlog line each: the exception's type and message, never a multi-line traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields["error"] = f"{type(error).__name__}: {error}"
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        import structlog  # loaded by configure_logging, which installs this handler

        structlog.get_logger(record.name).log(record.levelno, message, **fields)


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    # Imported here: the command line's checks (`check-config`, a refused `run`) print without it.
    import structlog

    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _clean_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.getLevelName(level.upper()))
