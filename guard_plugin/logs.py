"""structlog JSON lines on stderr, shared by the gateway hook and the CLI.

Events use stable keys: ``event``, ``guard_version``, ``p_unsafe``, ``decision``, ``latency_ms``,
``request_id``. Raw prompt or completion text is never logged unless ``GuardSettings.log_text``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured_level: int | None = None


class StderrLogger:
    """Writes each rendered event as one line to the *current* ``sys.stderr``."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure_logging(level: int | str = "INFO") -> None:
    """Configure structlog for JSON lines on stderr. Idempotent: calling again with the same
    level changes nothing; another level reconfigures."""
    global _configured_level
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if numeric == _configured_level:
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *args: StderrLogger(),
        cache_logger_on_first_use=False,
    )
    _configured_level = numeric


def get_logger(name: str, **initial: Any) -> Any:
    """A structlog logger bound to ``logger_name=name``. Sets up JSON logging unless the application
    has configured structlog itself."""
    if _configured_level is None and not structlog.is_configured():
        configure_logging()
    return structlog.get_logger(name, logger_name=name, **initial)
