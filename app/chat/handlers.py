"""The message pipeline: send, reply, modify, delete and typing SENDs, and file messages
(issue 3 items 2, 4, 6).

Every handler runs: validate (payloads.py) → authorize (access.py) → store in MongoDB →
hand the record to the Kafka producer → wait for the broker's ack → schedule push
notifications. Sending a message or a reply returns a ``Pending`` (app/contracts.py) right
after authorizing: the store and the hand-over to Kafka happen in the process's group commit
(group_commit.py: many SENDs per ``insert_many``, published in submission order), and the
transport reads the connection's next SEND meanwhile and calls ``wait()`` in SEND order.
Typing returns the broker's pending ack. Modify and delete wait before returning:
their undo writes back the whole earlier version of the message, which would wipe out a
later change to it still in flight. Once a handler, or its ``Pending``, returned, both the
store and the publish succeeded and the transport may send the RECEIPT.

When the publish fails after the store succeeded, the change is undone (the new message
removed, the edited/deleted message restored) and the error propagates: the client gets
an ERROR, may retry, and nothing it was not told about stays half-done. (If the broker did
take the record but its ack was lost, subscribers saw a change that the undo reverted;
a retry re-sends it. That is the rarer, visible failure, chosen over silently stored but
never-delivered messages.)

A file message (``post_file``, called by the HTTP upload once it stored the files and
checked the room) takes the same path as a sent message: group commit, ``file-topic`` record,
ack, undo on failure. It differs in two ways the upload answer depends on: the caller waits
for the stored message (its id is in the answer), and no push notification is sent, as before
uploads went through this pipeline.

Identity and ids are server-owned (W-1, W-9): the author is the connection's user; ids
and timestamps are generated here; author name/avatar come from the auth service when it
is configured, otherwise from the client's ``name``/``profileImage``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Callable, NamedTuple, Protocol

from app.chat import events
from app.chat.access import Access
from app.chat.group_commit import GroupCommit, Submitted
from app.chat.model import TOPICS, ChatMessage
from app.chat.payloads import Delete, Modify, SendMessage, SendReply, Typing
from app.chat.ports import EventBus, MessageWriter, PublishAck
from app.chat.timefmt import utcnow
from app.contracts import ClientConnection
from app.destinations import RoomKind
from app.errors import BackendError, BadRequest, Forbidden, NotFound

__all__ = ["MessageStore", "ProfileLookup", "MessageObserver", "Authors", "TypingLimiter", "Messaging", "Published",
           "Committed"]

log = logging.getLogger(__name__)

_EDITABLE_TYPES = (None, "reply")


class MessageStore(MessageWriter, Protocol):
    """``MessageWriter`` plus the two undo operations used when a publish fails."""

    def remove(self, kind: RoomKind, message_id: str) -> None:
        """Delete a message by id, whoever wrote it (undo of an insert)."""
        ...

    def restore(self, message: ChatMessage) -> None:
        """Put ``message`` back exactly as given, under its id (undo of an edit or delete)."""
        ...


class _Profile(Protocol):
    name: str | None
    image: str | None


class ProfileLookup(Protocol):
    """``app.chat.profiles.Profiles``: None when no auth service is configured or the user is unknown."""

    def lookup(self, user_id: int) -> _Profile | None: ...


class MessageObserver(Protocol):
    """Told about each stored and published new message (push notifications)."""

    def message_stored(self, message: ChatMessage) -> None: ...


class Author(NamedTuple):
    name: str | None
    image: str | None


class Authors:
    """Author name and avatar: the auth service's profile, else what the client sent."""

    def __init__(self, profiles: ProfileLookup | None) -> None:
        self._profiles = profiles

    def resolve(self, user_id: int, client_name: str | None, client_image: str | None) -> Author:
        profile = self._lookup(user_id)
        if profile is None or profile.name is None:
            return Author(client_name, client_image)
        return Author(profile.name, profile.image)

    def name_of(self, user_id: int, fallback: str | None) -> str | None:
        profile = self._lookup(user_id)
        return profile.name if profile is not None and profile.name is not None else fallback

    def _lookup(self, user_id: int) -> _Profile | None:
        if self._profiles is None:
            return None
        try:
            return self._profiles.lookup(user_id)
        except BackendError:
            # The auth service being down must not stop chat; fall back to the client's values.
            log.warning("profile lookup failed; using client-sent name")
            return None


class TypingLimiter:
    """At most one typing event per (user, room) per interval, process-wide.

    Kept in process memory: each worker limits its own connections, which bounds the
    broadcast rate to workers x 1/interval per user and room without a Redis round trip.
    """

    PRUNE_ABOVE = 10_000

    def __init__(self, interval_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._last: dict[tuple[int, str, int], float] = {}

    def allow(self, user_id: int, kind: str, channel_id: int) -> bool:
        now = self._monotonic()
        key = (user_id, kind, channel_id)
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        self._last[key] = now
        if len(self._last) > self.PRUNE_ABOVE:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t < self._interval_s}


class Messaging:
    """The message handlers; one instance per process."""

    def __init__(self, *, store: MessageStore, bus: EventBus, access: Access, authors: Authors,
                 observer: MessageObserver, typing_interval_s: float,
                 now: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._bus = bus
        self._access = access
        self._authors = authors
        self._observer = observer
        self._now = now
        self._typing = TypingLimiter(typing_interval_s, monotonic)
        self._commit = GroupCommit(store)

    def send_message(self, connection: ClientConnection, command: SendMessage) -> Committed:
        room = self._access.require_room(connection.user_id, command.room)
        author = self._authors.resolve(connection.user_id, command.name, command.profile_image)
        message = ChatMessage(kind=room.kind, channel_id=room.channel_id, community_id=room.community_id,
                              user_id=connection.user_id, content=command.content,
                              created_at=self._now(), name=author.name, profile_image=author.image)
        return Committed(self._commit.submit(message, lambda stored: self._publish_new(
            events.message_topic(stored.kind), stored, events.message_record(stored))))

    def send_reply(self, connection: ClientConnection, command: SendReply) -> Committed:
        room = self._access.require_room(connection.user_id, command.room)
        parent = self._store.get(room.kind, command.parent_id)
        if parent is None or parent.channel_id != room.channel_id:
            raise NotFound("parentId: no such message in this room")
        author = self._authors.resolve(connection.user_id, command.name, command.profile_image)
        message = ChatMessage(kind=room.kind, channel_id=room.channel_id, community_id=room.community_id,
                              user_id=connection.user_id, content=command.content,
                              created_at=self._now(), name=author.name, profile_image=author.image,
                              type="reply", parent_id=parent.id,
                              parent_name=self._authors.name_of(parent.user_id, parent.name),
                              parent_content=parent.content)
        return Committed(self._commit.submit(message, lambda stored: self._publish_new(
            events.etc_topic(stored.kind), stored, events.reply_record(stored))))

    def post_file(self, message: ChatMessage) -> ChatMessage:
        """Store and publish a file message whose room the caller already checked; the stored message.

        Blocks until stored and acknowledged; raises why not (a failed publish was undone).
        """
        stored_messages: list[ChatMessage] = []

        def publish(stored: ChatMessage) -> Published:
            stored_messages.append(stored)
            return self._publish(TOPICS["file"], stored.channel_id, events.file_push_body(stored),
                                 undo=lambda: self._store.remove(stored.kind, stored.id))

        Committed(self._commit.submit(message, publish)).wait()
        return stored_messages[0]

    def modify(self, connection: ClientConnection, command: Modify) -> None:
        room = self._access.require_room(connection.user_id, command.room)
        original = self._own_message(connection.user_id, room.kind, room.channel_id, command.message_id)
        if original.type not in _EDITABLE_TYPES:
            raise BadRequest("id: only text messages can be edited")  # a file message's content is its URL
        edited = self._store.edit(room.kind, original.id, connection.user_id, command.content, self._now())
        if edited is None:
            raise NotFound("id: no such message")  # deleted between the read and the edit
        self._publish(events.etc_topic(room.kind), room.channel_id, events.modify_record(edited),
                      undo=lambda: self._store.restore(original)).wait()

    def delete(self, connection: ClientConnection, command: Delete) -> None:
        room = self._access.require_room(connection.user_id, command.room)
        original = self._own_message(connection.user_id, room.kind, room.channel_id, command.message_id)
        removed = self._store.delete(room.kind, original.id, connection.user_id)
        if removed is None:
            raise NotFound("id: no such message")
        self._publish(events.etc_topic(room.kind), room.channel_id,
                      events.delete_record(room.channel_id, removed.id),
                      undo=lambda: self._store.restore(removed)).wait()

    def typing(self, connection: ClientConnection, command: Typing) -> PublishAck | None:
        """Publish a typing event; None when rate-limited (dropped, still acknowledged)."""
        room = self._access.require_room(connection.user_id, command.room)
        if not self._typing.allow(connection.user_id, room.kind, room.channel_id):
            return None
        name = self._authors.name_of(connection.user_id, command.name)
        return self._bus.publish_nowait(events.etc_topic(room.kind), events.record_key(room.channel_id),
                                        events.typing_record(room.channel_id, name))

    def _own_message(self, user_id: int, kind: RoomKind, channel_id: int, message_id: str) -> ChatMessage:
        message = self._store.get(kind, message_id)
        if message is None or message.channel_id != channel_id:
            raise NotFound("id: no such message in this room")
        if message.user_id != user_id:
            raise Forbidden("only the author may change a message")
        return message

    def _publish_new(self, topic: str, stored: ChatMessage, value: bytes) -> Published:
        """Publish a just-stored message (in the committer); undone by removing it."""
        return self._publish(topic, stored.channel_id, value,
                             undo=lambda: self._store.remove(stored.kind, stored.id),
                             then=lambda: self._observer.message_stored(stored))

    def _publish(self, topic: str, room_id: int, value: bytes, *, undo: Callable[[], None],
                 then: Callable[[], None] = lambda: None) -> Published:
        """Hand a stored change to Kafka; the result waits for the ack (undoing on failure)."""
        try:
            ack = self._bus.publish_nowait(topic, events.record_key(room_id), value)
        except Exception:
            _undo(undo)
            raise
        return Published(ack, undo=undo, then=then)


class Committed:
    """The ``Pending`` of a submitted message: stored and handed to Kafka in the group commit, then acked."""

    def __init__(self, submitted: Submitted[Published]) -> None:
        self._submitted = submitted

    def wait(self) -> None:
        """Return once stored and acknowledged; raise why not (a failed publish was undone)."""
        self._submitted.wait().wait()


class Published:
    """The ``Pending`` of a stored change: the broker's ack, then ``then``; on failure, ``undo``."""

    def __init__(self, ack: PublishAck, *, undo: Callable[[], None], then: Callable[[], None]) -> None:
        self._ack = ack
        self._undo = undo
        self._then = then

    def wait(self) -> None:
        """Return once the broker acknowledged; otherwise undo the change and raise."""
        try:
            self._ack.wait()
        except Exception:
            _undo(self._undo)
            raise
        self._then()


def _undo(undo: Callable[[], None]) -> None:
    try:
        undo()
    except Exception:  # noqa: BLE001 - the publish error is the one to report
        log.exception("could not undo a stored change after a failed publish")

