"""The small interfaces the chat domain needs from storage and the broker; backends implement them.

Only ``app/backends/<backend>.py`` modules import a client library (pymongo, redis, kafka).
The chat domain depends on these Protocols, which is also what the in-memory fakes of the
unit tests (``tests/fakes.py``, held to the real backends by ``tests/contract``) implement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, BinaryIO, Collection, Iterable, Mapping, Protocol, Sequence

from app.chat.model import (ChatMessage, Claimed, Latest, OutboxRef, PendingChange, Repeated, RoomActivity, RoomEvent, RoomKey,
                            StoredFile)
from app.destinations import RoomKind
from app.errors import ChatServerError

__all__ = [
    "MessageWriter",
    "HistoryReader",
    "ReadMarkers",
    "FileStore",
    "MembershipCache",
    "EventBus",
    "PublishAck",
    "ServiceClient",
    "Outbox",
    "EventLog",
]


class MessageWriter(Protocol):
    """Write side of the message collections (``directMessage``, ``channelMessage``)."""

    def insert(self, message: ChatMessage) -> ChatMessage:
        """Store a new message under a server-generated id; returns it with ``id`` set."""
        ...

    def insert_many(self, messages: Sequence[ChatMessage]) -> list[ChatMessage | Repeated | ChatServerError]:
        """Store several new messages at once (group commit), each under a server-generated id.

        Each is stored durably (the configured write concern) and marked unpublished (the
        outbox, see :class:`Outbox`). Returns one entry per input, in order: the stored
        message with ``id`` set; ``Repeated`` when its author already stored a message with
        the same ``nonce`` in the same room; or the error that kept that one message out
        (``BackendError``, or ``BadRequest`` for a nonce its author used in another room). One
        failure does not stop the others.
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
             before_id: str | None = None, communities: Collection[int] | None = None) -> list[ChatMessage]:
        """Newest first: ``page`` pages back, or the ``size`` messages older than ``before_id``;
        with ``communities``, as if the room held only the messages written in one of them."""
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
    """Uploaded files under server-generated keys (GridFS in production)."""

    def save(self, data: BinaryIO, meta: StoredFile) -> StoredFile: ...

    def open(self, key: str) -> tuple[StoredFile, BinaryIO] | None: ...

    def delete(self, key: str) -> None:
        """Remove a file (undo of an upload whose message was not stored or published)."""
        ...


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


class ServiceClient(Protocol):
    """The JSON client to the other services (``app.backends.http_services``).

    Raises ``BackendUnavailable`` when the service is down or broken and
    ``app.errors.ServiceRefused`` when it answered 4xx.
    """

    def get_json(self, url: str) -> Any:
        """The decoded JSON body of ``GET url``."""
        ...

    def post_json(self, url: str, body: Any) -> Any:
        """The decoded JSON body of ``POST url`` with ``body`` as JSON (None for an empty reply)."""
        ...


class Outbox(Protocol):
    """The transactional outbox: stored events the broker has not acknowledged yet.

    A new message is unpublished from the write that stores it (``MessageWriter.insert_many``).
    An edit or a delete is recorded as a :class:`PendingChange` before it is made. Once the
    broker acknowledged an event, ``published`` forgets it.
    """

    def add_change(self, change: PendingChange) -> PendingChange:
        """Record an edit or a delete about to be made; returns it with its ``id``."""
        ...

    def drop_change(self, change_id: str) -> None:
        """Forget a recorded change that did not happen (the message was not the author's, or gone)."""
        ...

    def published(self, refs: Sequence[OutboxRef]) -> None:
        """The broker acknowledged these events."""
        ...

    def claim_stale(self, older_than: datetime, owner: str, limit: int) -> Claimed:
        """Take over unpublished events older than ``older_than`` (oldest first); each goes to one claimer."""
        ...

    def forget_nonces(self, older_than: datetime) -> int:
        """Let nonces of messages stored before ``older_than`` be used again; how many were forgotten."""
        ...


class EventLog(Protocol):
    """Each room's numbered events (``app/chat/room_log.py``): the counters and the log itself.

    A room's numbers start at 1 and each is handed out once, durably, across every worker
    and node. The log keeps each event's record for replay and gap healing.
    """

    def allocate(self, counts: Mapping[RoomKey, int], messages: Sequence[ChatMessage] = ()) -> dict[RoomKey, int]:
        """Reserve ``counts[room]`` consecutive numbers in each room; the first of each block.

        One atomic step per room, all rooms in as few calls as the backend can. ``messages``
        are the new messages among the numbered events: a backend that keeps per-room figures
        beside its counters (the MongoDB one: the rooms' message summaries) counts them in
        the same step.
        """
        ...

    def uncount(self, messages: Sequence[ChatMessage]) -> None:
        """Take back new messages ``allocate`` counted that were then not stored (best effort)."""
        ...

    def expect(self, room: RoomKey, seq: int) -> None:
        """Number ``seq`` of ``room`` was handed out (its event was consumed here): a hint that
        the room's counter is at least there, which a backend may use to number the room's next
        round in fewer calls. Never raises, never blocks."""
        ...

    def append(self, entries: Sequence[RoomEvent]) -> None:
        """Keep these events, durably; an event already kept (same room and seq) is left as it is."""
        ...

    def after(self, room: RoomKey, seq: int, limit: int) -> list[RoomEvent]:
        """The kept events of ``room`` numbered above ``seq`` and at most ``seq + limit``, lowest first."""
        ...

    def latest(self, room: RoomKey) -> Latest:
        """The highest number handed out in ``room`` (0 before its first event), and when."""
        ...

    def went_quiet(self, since: datetime, until: datetime) -> dict[RoomKey, int]:
        """Rooms whose last number was handed out in [since, until), with that number."""
        ...

    def prune(self, older_than: datetime) -> int:
        """Forget events kept before ``older_than``; how many."""
        ...
