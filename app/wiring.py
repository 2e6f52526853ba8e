"""The composition root: builds everything one chat-server process runs.

``build_services(settings)`` picks the implementations (MongoDB, Redis, Kafka, presence)
and returns the ``Services`` bundle the web app and the worker lifecycle use. Nothing here
opens a connection at import or build time: clients connect lazily, after the worker forked.
``create_topics(settings)`` creates the Kafka topics (the dev launcher calls it once).
"""

from __future__ import annotations

from app.backends import kafka_bus
from app.chat.application import ChatService
from app.contracts import Services
from app.settings import Settings

__all__ = ["build_services", "create_topics"]


def build_services(settings: Settings) -> Services:
    """The ``Services`` bundle of one chat-server process."""
    return Services(application=ChatService())


def create_topics(settings: Settings) -> list[str]:
    """Create Smooth's Kafka topics (idempotent); returns the newly created names."""
    return kafka_bus.create_topics(settings)
