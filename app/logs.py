"""Logging setup shared by Smooth's three processes (chat workers, presence, dev launcher).

kafka-python logs every connection, bootstrap and group step at INFO, which buries our
own lines; it is held at WARNING unless LOG_LEVEL asks for DEBUG.
"""

from __future__ import annotations

import logging

__all__ = ["configure_logging", "LOG_FORMAT"]

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
