"""The chat server's HTTP side: Flask views only, over the chat domain of ``app.chat``.

- ``routes``: ``create_blueprint``, the ``/chat-server`` API clients and the community
  service call (history, files, rooms);
- ``presence_callbacks``: ``create_service_blueprint``, the endpoints the presence server calls;
- ``auth`` (who is calling, may they touch this room), ``params`` (strict input parsing),
  ``history``, ``files``, ``rooms``: the pieces ``routes`` assembles.

Answers use the one envelope of ``app.http_envelope``.
"""

from app.chat.http.presence_callbacks import create_service_blueprint
from app.chat.http.routes import create_blueprint

__all__ = ["create_blueprint", "create_service_blueprint"]
