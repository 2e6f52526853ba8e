"""The WSGI entry point gunicorn loads in each worker: ``wsgi_app = "app.wsgi:build()"``.

``build()`` reads the settings once, configures logging, builds the services with the
composition root (``app.wiring``) and returns the Flask app. Called after fork, so no
client connection is shared between workers.
"""

from __future__ import annotations

from flask import Flask

from app.logs import configure_logging
from app.settings import Settings
from app.web import create_app

__all__ = ["build"]


def build() -> Flask:
    """The chat server app of this worker, configured from the environment."""
    from app.wiring import build_services  # the composition root imports every backend

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, build_services(settings))
