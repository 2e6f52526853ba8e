"""Logging shared by Smooth's three processes (chat workers, presence, dev launcher).

- :func:`configure_logging`: the format and levels. kafka-python logs every connection,
  bootstrap and group step at INFO, which buries our own lines; it is held at WARNING
  unless LOG_LEVEL asks for DEBUG.
- :class:`RateLimitedLog`: the one way a failure that can repeat per request (a backend
  down, a pool exhausted) is logged: the first of a burst at once, then at most one line
  per interval saying how many were held back, and never a traceback.

Standard library only, so backends may use it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Final

__all__ = ["configure_logging", "LOG_FORMAT", "RateLimitedLog", "BURST_INTERVAL_S"]

# One line per failure site per this many seconds while a burst lasts.
BURST_INTERVAL_S: Final = 10.0

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
_CHATTY_LIBRARIES = ("kafka",)


def configure_logging(level_name: str) -> None:
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        level = logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)
    library_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)


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
