"""The chat domain as the STOMP transport sees it: ``ChatApplication`` (app/contracts.py).

``ChatService`` owns the SEND destination table (the destination, never the payload's
``type``, chooses the handler; protocol.md W-8), the SUBSCRIBE authorizer and the
connect/disconnect hooks. Each table entry is: parse the body into a typed command
(payloads.py), then hand it to the message handlers (handlers.py) or the presence flow
(presence_flow.py), and return what they return (a ``Pending`` or None).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from app.chat import events, payloads
from app.chat.access import Access
from app.chat.handlers import CURRENT_COMMUNITY, Messaging
from app.chat.model import RoomKey
from app.chat.presence_flow import PresenceFlow
from app.chat.room_log import RoomLog
from app.chat.room_memory import RoomMemory
from app.contracts import APP_PREFIX, ClientConnection, Pending, Resumed, SendHandler
from app.destinations import parse_topic
from app.errors import BadRequest

__all__ = ["ChatService", "DESTINATIONS", "numbered_room", "reset_body"]

DESTINATIONS = tuple(APP_PREFIX + name for name in (
    "send-direct-message", "send-channel-message",
    "send-direct-typing", "send-channel-typing",
    "send-direct-reply", "send-channel-reply",
    "send-direct-modify", "send-channel-modify",
    "send-direct-delete", "send-channel-delete",
    "join-channel", "community-signaling", "signaling",
))


class ChatService:
    """Implements ``app.contracts.ChatApplication``."""

    def __init__(self, *, messaging: Messaging, presence: PresenceFlow, access: Access, room_log: RoomLog,
                 message_max_chars: int, memory: RoomMemory | None = None) -> None:
        """``memory``: the events this process pushed lately, replayed without the database when
        they cover a resume (app/chat/room_memory.py)."""
        self._messaging = messaging
        self._room_log = room_log
        self._memory = memory
        self._presence = presence
        self._access = access
        self._max_chars = message_max_chars
        self._handlers = self._build_table()

    @property
    def send_handlers(self) -> Mapping[str, SendHandler]:
        return self._handlers

    def authorize_subscription(self, connection: ClientConnection, destination: str) -> None:
        self._access.authorize_subscription(connection.user_id, destination)
        topic = parse_topic(destination)
        if topic is not None and topic.kind == "community":
            # The community page the client shows: what its channel typing is assumed to be in.
            connection.attributes[CURRENT_COMMUNITY] = topic.ident

    def resume(self, connection: ClientConnection, destination: str, since_seq: int) -> Resumed:
        """The room's events after ``since_seq`` that this reader may see (a channel's: of its
        communities only, app/chat/channel_scope.py)."""
        room = numbered_room(destination)
        if room is None:
            raise BadRequest("since-seq: only room destinations (/topic/direct/…, /topic/group/…) are numbered")
        recent = self._memory.after(room, since_seq) if self._memory is not None else None
        if recent is None or len(recent) > self._room_log.replay_max_events:  # the log decides a reset
            replay = self._room_log.replay(room, since_seq)
            if replay.reset:
                return Resumed([(replay.latest, reset_body(replay.latest))], reset=True)
            recent = [events.decode(event.topic, event.value) for event in replay.events]
        readable = self._readable(connection.user_id)
        return Resumed([(decoded.seq, body) for decoded in recent if readable(decoded) and decoded.seq is not None
                        for pushed_to, body in decoded.pushes if pushed_to == destination])

    def _readable(self, user_id: int) -> Callable[[events.Decoded], bool]:
        """Whether ``user_id`` may see a decoded event (one membership check per community)."""
        seen: dict[tuple[int, int | None], bool] = {}

        def readable(decoded: events.Decoded) -> bool:
            scope = decoded.channel_scope
            if scope is None:
                return True
            if scope not in seen:
                seen[scope] = self._access.scope.readable(user_id, *scope)
            return seen[scope]
        return readable

    def connected(self, connection: ClientConnection) -> None:
        self._presence.connected(connection)

    def disconnected(self, connection: ClientConnection) -> None:
        self._presence.disconnected(connection)

    def _build_table(self) -> dict[str, SendHandler]:
        m, p, limit = self._messaging, self._presence, self._max_chars
        table: dict[str, SendHandler] = {}
        for kind in ("direct", "channel"):
            table[f"send-{kind}-message"] = _bind(
                m.send_message, lambda b, key, k=kind: payloads.parse_send_message(b, k, limit, key))
            table[f"send-{kind}-reply"] = _bind(
                m.send_reply, lambda b, key, k=kind: payloads.parse_send_reply(b, k, limit, key))
            table[f"send-{kind}-modify"] = _bind(m.modify, lambda b, key, k=kind: payloads.parse_modify(b, k, limit))
            table[f"send-{kind}-delete"] = _bind(m.delete, lambda b, key, k=kind: payloads.parse_delete(b, k))
            table[f"send-{kind}-typing"] = _bind(m.typing, lambda b, key, k=kind: payloads.parse_typing(b, k))
        table["join-channel"] = _bind(p.join, lambda b, key: payloads.parse_join(b))
        table["community-signaling"] = _bind(p.enter_community, lambda b, key: payloads.parse_community_signaling(b))
        table["signaling"] = _bind(p.enter_voice, lambda b, key: payloads.parse_voice_signaling(b))
        handlers = {APP_PREFIX + name: handler for name, handler in table.items()}
        assert set(handlers) == set(DESTINATIONS)
        return handlers


def _bind(handle: Callable[[ClientConnection, Any], Pending | None],
          parse: Callable[[bytes, str | None], object]) -> SendHandler:
    """A ``SendHandler``: parse first (nothing happens on a bad body), then handle."""
    def handler(connection: ClientConnection, body: bytes, idempotency_key: str | None = None) -> Pending | None:
        return handle(connection, parse(body, idempotency_key))
    return handler


_NUMBERED_TOPICS = {"direct": "direct", "group": "channel"}


def numbered_room(destination: str) -> RoomKey | None:
    """The room whose numbered events ``destination`` carries, or None (presence topics)."""
    parsed = parse_topic(destination)
    if parsed is None or parsed.kind not in _NUMBERED_TOPICS:
        return None
    return (_NUMBERED_TOPICS[parsed.kind], parsed.ident)  # type: ignore[return-value]


def reset_body(latest: int) -> bytes:
    """The push that tells a resuming client to reload history, then go on from ``latest``."""
    return events.encode({"type": "reset", "seq": latest})
