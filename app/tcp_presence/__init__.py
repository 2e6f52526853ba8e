"""The presence server: who is online and where (protocol.md §7), over a CRLF line protocol.

Modules:

- ``codec``: pure framing, request parsing (original pseudo-JSON and real JSON) and
  reply formatting.
- ``handler``: request -> store calls -> reply; the ``PresenceStore`` and
  ``ChatNotifier`` interfaces and their result types.
- ``server``: the gevent TCP server and the composition of the whole process
  (``python -m app.tcp_presence``); ``http``: the Flask API on PRESENCE_HTTP_PORT;
  ``reaper``: node-lease expiry and the POSTs to the chat server.

The real store is ``app/backends/redis_presence.py``; the chat side's client is
``app/presence_client.py``. Only the pure modules are re-exported here, so importing
this package starts nothing and imports neither gevent nor redis.
"""

from .codec import (
    DEFAULT_REPLY,
    LineReader,
    LineTooLongEvent,
    Reply,
    Request,
    RequestError,
    format_error,
    format_reply,
    parse_request,
)
from .handler import (
    ChatNotifier,
    LocationChange,
    PresenceHandler,
    PresenceStore,
    ReapBatch,
    SessionEnd,
    SyncOutcome,
    VoiceEntry,
    VoiceOut,
)

__all__ = [
    "DEFAULT_REPLY",
    "LineReader",
    "LineTooLongEvent",
    "Reply",
    "Request",
    "RequestError",
    "format_error",
    "format_reply",
    "parse_request",
    "ChatNotifier",
    "LocationChange",
    "PresenceHandler",
    "PresenceStore",
    "ReapBatch",
    "SessionEnd",
    "SyncOutcome",
    "VoiceEntry",
    "VoiceOut",
]
