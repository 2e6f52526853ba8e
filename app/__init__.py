"""Smooth: a real-time chat backend (STOMP chat server and TCP presence server).

This package module stays import-light on purpose: ``python -m app.tcp_presence`` and the
gunicorn workers must monkey-patch with gevent before ssl, sockets or Flask are imported,
and importing a submodule imports this file first. The web app factory lives in
``app.web``; ``create_app`` is re-exported lazily for convenience.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.web import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
