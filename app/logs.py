"""Logging shared by Smooth's three processes (chat workers, presence, dev launcher).

- :func:`configure_logging`: the format and levels. ``LOG_FORMAT=text`` gives one readable
  line per record; ``json`` one JSON object per line (:class:`JsonFormatter`: time, level,
  logger, message, pid, the ids of :func:`log_context`, and the traceback if any), for log
  shippers. kafka-python logs every connection, bootstrap and group step at INFO, which buries
  our own lines; it is held at WARNING unless LOG_LEVEL asks for DEBUG.
- :func:`log_context`: the id of what a greenlet works for (``session``: a STOMP session, set
  by the transport; ``request``: an HTTP request, set for every Flask request by
  app/http_envelope.py; ``connection``: a presence TCP connection), which every record it
  logs carries. A context variable: greenlets do not share one.
- :func:`gunicorn_logconfig`: the same JSON format for gunicorn's own lines (gunicorn.conf.py).
- :class:`RateLimitedLog`: the one way a failure that can repeat per request (a backend
  down, a pool exhausted) is logged: the first of a burst at once, then at most one line
  per interval saying how many were held back, and never a traceback.

Standard library only, so backends may use it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Final

__all__ = ["configure_logging", "LOG_FORMAT", "RateLimitedLog", "BURST_INTERVAL_S", "JsonFormatter",
           "log_context", "add_log_context", "gunicorn_logconfig"]

# One line per failure site per this many seconds while a burst lasts.
BURST_INTERVAL_S: Final = 10.0

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
_CHATTY_LIBRARIES = ("kafka",)

# The ids of what the current greenlet works for, e.g. {"session": "k3x..."}; () when none.
_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("smooth_log_context",
                                                                                         default=())


def log_context(**ids: str) -> None:
    """From now on, what this greenlet logs carries ``ids`` (replacing those it carried)."""
    _CONTEXT.set(tuple(ids.items()))


def add_log_context(**ids: str) -> None:
    """From now on, what this greenlet logs also carries ``ids``."""
    _CONTEXT.set(tuple({**dict(_CONTEXT.get()), **ids}.items()))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message,
    pid, the :func:`log_context` ids, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        entry.update(_CONTEXT.get())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(level_name: str, log_format: str = "text") -> None:
    """The root logger of this process: ``level_name``, one stderr handler in ``log_format``."""
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        level = logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter(log_format))
    # force: a gunicorn worker inherits the master's root handler; this process decides.
    logging.basicConfig(level=level, handlers=[handler], force=True)
    library_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)


def gunicorn_logconfig(level_name: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict`` for JSON lines: its own lines in our format on stderr.

    gunicorn turns its access log on whenever a logconfig is given; it stays off (WARNING), as
    without one: one line per SockJS poll would bury everything else.
    """
    formatter = {"()": f"{__name__}.JsonFormatter"}
    return {
        "formatters": {"generic": formatter},
        "root": {"level": level_name.upper(), "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"level": level_name.upper(), "handlers": ["error_console"], "propagate": False,
                               "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "WARNING", "handlers": ["error_console"], "propagate": False,
                                "qualname": "gunicorn.access"},
        },
    }


class RateLimitedLog:
    """Logs one failure site at most once per ``interval_s``; the next line counts the rest.

    ``log.warning("redis unavailable: %s", error)`` during an outage of 5,000 requests gives
    one line at once and one line per interval (``... (4,999 more in 10 s)``), without the
    chained tracebacks ``exc_info`` would add: the message names the error, which is enough.
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = BURST_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self.suppressed = 0
        self._next = float("-inf")
        self._lock = threading.Lock()

    def warning(self, message: str, *args: Any) -> None:
        self.log(logging.WARNING, message, *args)

    def error(self, message: str, *args: Any) -> None:
        self.log(logging.ERROR, message, *args)

    def log(self, level: int, message: str, *args: Any) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next:
                self.suppressed += 1
                return
            held, self.suppressed = self.suppressed, 0
            self._next = now + self.interval_s
        if held:
            message += f" ({held} more like it in the last {self.interval_s:g} s)"
        self.logger.log(level, message, *args)
