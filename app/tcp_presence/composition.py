"""The presence server's composition: the one place its parts are chosen and wired.

Owns :func:`build_presence_service`: from ``Settings``, the Redis store
(:class:`~app.backends.redis_presence.RedisPresenceStore`), the chat notifier that POSTs
to the chat server, and the :class:`~app.tcp_presence.server.PresenceService` that hands
both to the TCP handler, the HTTP API and the reaper. This is the only presence-server
module that imports a backend; ``python -m app.tcp_presence`` imports it after gevent
has patched the standard library.
"""

from __future__ import annotations

from app.backends.redis_presence import RedisPresenceStore
from app.settings import Settings

from .reaper import HttpChatNotifier
from .server import PresenceService

__all__ = ["build_presence_service"]


def build_presence_service(settings: Settings) -> PresenceService:
    """The whole presence process for ``settings``, not started yet."""
    return PresenceService(settings, RedisPresenceStore.from_settings(settings), HttpChatNotifier(settings))
