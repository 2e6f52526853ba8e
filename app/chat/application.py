"""The chat domain as the STOMP transport sees it: ``ChatApplication`` (app/contracts.py).

First version: no SEND destinations yet and every SUBSCRIBE refused, so a transport wired
to it is safe while the handlers land.
"""

from __future__ import annotations

from typing import Mapping

from app.contracts import ClientConnection, SendHandler
from app.errors import Forbidden

__all__ = ["ChatService"]


class ChatService:
    """Implements ``app.contracts.ChatApplication``."""

    def __init__(self) -> None:
        self._handlers: dict[str, SendHandler] = {}

    @property
    def send_handlers(self) -> Mapping[str, SendHandler]:
        return self._handlers

    def authorize_subscription(self, connection: ClientConnection, destination: str) -> None:
        raise Forbidden()

    def connected(self, connection: ClientConnection) -> None:
        return None

    def disconnected(self, connection: ClientConnection) -> None:
        return None
