"""The chat domain's model: stored messages, room activity, uploaded files, and the Kafka topics.

Times are naive UTC ``datetime`` values (MongoDB returns them that way; the wire formats of
protocol.md §2.7 have no zone). A room's kind (``direct`` or ``channel``) is
``app.destinations.RoomKind``. Pure: stdlib and ``app.destinations`` only, so the storage
backends can import it without importing the rest of the chat package.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final, Literal

from app.destinations import RoomKind

__all__ = ["ChatMessage", "Repeated", "PendingChange", "OutboxRef", "CHANGE_PLACE", "Claimed", "RoomActivity",
           "StoredFile", "TOPICS", "NONCE_MAX_CHARS", "stored_time", "RoomKey", "RoomEvent", "Latest"]

# The longest idempotency key a client may send with a message (Discord's nonce is 25).
NONCE_MAX_CHARS = 64

# Kafka topics of protocol.md §3.1 (names kept for compatibility).
TOPICS: Final = {
    "direct": "chat-server-topic",
    "channel": "channel-server-topic",
    "direct_etc": "etc-direct-topic",
    "channel_etc": "etc-community-topic",
    "file": "file-topic",
    "state": "state-topic",
}


@dataclass(frozen=True)
class ChatMessage:
    """One stored message of a DM room (``direct``) or a community text channel (``channel``).

    ``type`` is what protocol.md §4.1 stores: None for text, ``reply``, or the upload's
    ``fileType`` (``image``, ``video``, ``file``...). ``channel_id`` is the DM room id for
    ``direct`` messages. ``nonce`` is the client's idempotency key, if it sent one: a second
    message of the same author with the same nonce is not stored (see :class:`Repeated`).
    ``seq`` is the message's number in its room's event sequence (``app/chat/room_log.py``);
    None for messages stored before sequences existed.
    """

    kind: RoomKind
    channel_id: int
    user_id: int
    content: str
    created_at: datetime
    id: str = ""
    community_id: int | None = None
    name: str | None = None
    profile_image: str | None = None
    type: str | None = None
    thumbnail: str | None = None
    parent_id: str | None = None
    parent_name: str | None = None
    parent_content: str | None = None
    edited_at: datetime | None = None
    nonce: str | None = None
    seq: int | None = None

    @property
    def room(self) -> "RoomKey":
        return (self.kind, self.channel_id)

    def with_id(self, message_id: str) -> "ChatMessage":
        return replace(self, id=message_id)


@dataclass(frozen=True)
class Repeated:
    """A message whose author already sent one with its nonce: ``original`` is what was stored."""

    original: ChatMessage


@dataclass(frozen=True)
class PendingChange:
    """An edit or a delete that is being stored or was stored and is not published yet.

    Written before the change itself (an intent), so a crash between the two is noticed: a
    change is published only once the message shows it happened (``app/chat/relay.py``).
    ``seq`` is numbered before the intent is written, so whoever publishes it uses one number.
    """

    action: Literal["modify", "delete"]
    kind: RoomKind
    channel_id: int
    message_id: str
    content: str | None = None
    edited_at: datetime | None = None
    id: str = ""
    seq: int | None = None
    community_id: int | None = None  # a channel message's community (app/chat/channel_scope.py)

    @property
    def room(self) -> "RoomKey":
        return (self.kind, self.channel_id)


# A room as the event sequences know it: (kind, channel id).
RoomKey = tuple[RoomKind, int]


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One numbered event of a room's log: the Kafka record it was published as.

    ``topic`` and ``value`` are exactly what the relay produced, so replaying the log and
    consuming Kafka build the same pushes (``app/chat/events.py``).
    """

    room: RoomKey
    seq: int
    topic: str
    value: bytes
    at: datetime


@dataclass(frozen=True, slots=True)
class Latest:
    """A room's highest number handed out (0: none yet) and when it was."""

    seq: int
    at: datetime | None


# Where an unpublished event is kept: ("direct" | "channel", message id) for a new message,
# (CHANGE_PLACE, change id) for an edit or a delete.
OutboxRef = tuple[str, str]
CHANGE_PLACE: Final = "change"


def stored_time(moment: datetime) -> datetime:
    """``moment`` as the database keeps it (milliseconds), so stored and in-memory times compare."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Claimed:
    """Unpublished events a sweep took over from whoever stored them (a crashed worker)."""

    messages: list[ChatMessage]
    changes: list[PendingChange]


@dataclass(frozen=True)
class RoomActivity:
    """Unread count and latest activity of one DM room for one user (message-count)."""

    room_id: int
    count: int
    latest: datetime | None


@dataclass(frozen=True)
class StoredFile:
    """Metadata of an uploaded file kept in GridFS."""

    key: str
    filename: str
    content_type: str
    length: int
    kind: RoomKind
    channel_id: int
    uploader_id: int
    uploaded_at: datetime = field(default_factory=datetime.utcnow)
    community_id: int | None = None  # a channel file's community (app/chat/channel_scope.py)
