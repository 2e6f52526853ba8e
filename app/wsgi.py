"""The WSGI entry point gunicorn loads in each worker: ``wsgi_app = "app.wsgi:build()"``.

``build()`` reads the settings once, configures logging and returns the process's
:class:`~app.web.ChatServer` from the composition root. Called after fork, so no client
connection is shared between workers.
"""

from __future__ import annotations

from app.logs import configure_logging
from app.settings import Settings
from app.web import ChatServer

__all__ = ["build"]


def build() -> ChatServer:
    """The chat server of this worker, configured from the environment."""
    from app.composition import build_chat_server  # the composition root imports every backend

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return build_chat_server(settings)
