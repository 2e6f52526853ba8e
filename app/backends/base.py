"""The message model and the small interfaces every storage backend implements.

Only ``app/backends/<backend>.py`` modules import a client library (pymongo, redis,
kafka). Everything above them depends on these Protocols, which is also what the
in-memory fakes of the unit tests implement.

Times are naive UTC ``datetime`` values (MongoDB returns them that way; the wire
formats of protocol.md §2.7 have no zone).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import BinaryIO, Iterable, Literal, Protocol, Sequence

from app.errors import BackendError

__all__ = [
    "RoomKind",
    "ChatMessage",
    "RoomActivity",
    "StoredFile",
    "MessageWriter",
    "HistoryReader",
    "ReadMarkers",
    "FileStore",
    "MembershipCache",
    "EventBus",
    "PublishAck",
    "TOPICS",
]

RoomKind = Literal["direct", "channel"]

# Kafka topics of protocol.md §3.1 (names kept for compatibility).
TOPICS = {
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
    ``direct`` messages.
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

    def with_id(self, message_id: str) -> "ChatMessage":
        return replace(self, id=message_id)


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


class MessageWriter(Protocol):
    """Write side of the message collections (``directMessage``, ``channelMessage``)."""

    def insert(self, message: ChatMessage) -> ChatMessage:
        """Store a new message under a server-generated id; returns it with ``id`` set."""
        ...

    def insert_many(self, messages: Sequence[ChatMessage]) -> list[ChatMessage | BackendError]:
        """Store several new messages at once (group commit), each under a server-generated id.

        Returns one entry per input, in order: the stored message with ``id`` set, or the
        ``BackendError`` that kept that one message out. One failure does not stop the others.
        """
        ...

    def get(self, kind: RoomKind, message_id: str) -> ChatMessage | None: ...

    def edit(self, kind: RoomKind, message_id: str, author_id: int, content: str,
             edited_at: datetime) -> ChatMessage | None:
        """Atomically replace the content of the author's own message; None if no such message."""
        ...

    def delete(self, kind: RoomKind, message_id: str, author_id: int) -> ChatMessage | None:
        """Atomically remove the author's own message; returns what was removed."""
        ...


class HistoryReader(Protocol):
    """Read side: paged history and the denormalised parents of replies."""

    def page(self, kind: RoomKind, channel_id: int, *, size: int, page: int = 0,
             before_id: str | None = None) -> list[ChatMessage]:
        """Newest first: ``page`` pages back, or the ``size`` messages older than ``before_id``."""
        ...

    def get_many(self, kind: RoomKind, message_ids: Iterable[str]) -> dict[str, ChatMessage]: ...


class ReadMarkers(Protocol):
    """``messageTime``: one document per location, ``read.<userId>`` = last time seen."""

    def mark_read(self, location: str, user_id: int, at: datetime) -> None:
        """One atomic upsert of ``read.<user_id>``; ``home`` and voice locations are skipped."""
        ...

    def room_activity(self, user_id: int, room_ids: Sequence[int]) -> list[RoomActivity]:
        """Unread counts (others' messages newer than the user's mark) and latest times."""
        ...


class FileStore(Protocol):
    def save(self, data: BinaryIO, meta: StoredFile) -> StoredFile: ...

    def open(self, key: str) -> tuple[StoredFile, BinaryIO] | None: ...


class MembershipCache(Protocol):
    """Cached member and channel lists (Redis keys ``R{room}``, ``CH{community}``, ``CHN{community}``)."""

    def room_members(self, room_id: int) -> list[int] | None: ...

    def set_room_members(self, room_id: int, user_ids: Sequence[int]) -> None: ...

    def community_members(self, community_id: int) -> list[int] | None: ...

    def set_community_members(self, community_id: int, user_ids: Sequence[int]) -> None: ...

    def community_channels(self, community_id: int) -> list[int] | None: ...

    def set_community_channels(self, community_id: int, channel_ids: Sequence[int]) -> None: ...

    def channel_community(self, channel_id: int) -> int | None:
        """The community that owns a text channel (reverse index kept by the setter above)."""
        ...

    def user_rooms(self, user_id: int) -> list[str]:
        """``community/{id}`` and ``direct/{id}`` entries for a user (reverse index)."""
        ...


class PublishAck(Protocol):
    """The broker's acknowledgement of one record handed to the producer."""

    def wait(self) -> None:
        """Return once the broker acknowledged; raise BackendUnavailable if it failed or timed out.

        The timeout runs from when the record was handed over, not from this call.
        """
        ...


class EventBus(Protocol):
    """Kafka producer side: keyed, acknowledged publishing.

    Records of one key are appended in the order they were handed over, retries included.
    """

    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Return only once the broker acknowledged the record; raise BackendUnavailable otherwise."""
        ...

    def publish_nowait(self, topic: str, key: str, value: bytes) -> PublishAck:
        """Hand the record to the producer and return without waiting for the broker.

        Raises:
            BackendUnavailable: the producer could not even take the record.
        """
        ...
