"""The message pipeline: send, reply, modify, delete and typing SENDs, and file messages.

Every handler runs: validate (payloads.py) → authorize (access.py) → store in MongoDB,
durably → hand the change to the outbox relay (relay.py), which publishes it to Kafka for as
long as it takes → schedule push notifications. What a RECEIPT promises is therefore: the
change is stored durably and will be delivered. Nothing stored is ever undone.

- Sending a message or a reply returns a ``Pending`` (app/contracts.py) right after
  authorizing: the store happens in the process's group commit (group_commit.py: many SENDs
  per ``insert_many``), the transport reads the connection's next SEND meanwhile and calls
  ``wait()`` in SEND order, which returns the RECEIPT's ``message-id``.
- A message may carry an idempotency key (``nonce`` in the body, or the ``idempotency-key``
  header): a repeat from the same author stores nothing and is answered with the original
  message's id.
- An edit or a delete is numbered in its room's sequence and recorded in the outbox before
  it is made (so a crash between the two cannot lose a change that was made, nor publish one
  that was not), then made, then kept in the room's log and handed to the relay; it returns
  when stored. (When the log cannot be written after the change was made, the change is
  still acknowledged: it is stored, and the relay's sweep keeps and publishes it.)
- Typing is not stored: it is published and its broker acknowledgement is the ``Pending``.
- While the relay's backlog is full (the broker has been away long), new messages, edits
  and deletes are refused with ``BacklogFull`` before anything is stored.

A file message (``post_file``, called by the HTTP upload once it stored the files and
checked the room) takes the same path as a sent message, and returns the stored message
(its id is in the upload's answer). No push notification is sent for it.

Identity and ids are server-owned (W-1, W-9): the author is the connection's user; ids
and timestamps are generated here; author name/avatar come from the auth service when it
is configured, otherwise from the client's ``name``/``profileImage``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Callable, Mapping, NamedTuple, Protocol

from app.chat import events
from app.chat.access import Access
from app.chat.group_commit import GroupCommit, Submitted
from app.chat.model import ChatMessage, PendingChange
from app.chat.payloads import Delete, Modify, RoomRef, SendMessage, SendReply, Typing
from app.chat.ports import EventBus, MessageWriter, Outbox, PublishAck
from app.chat.relay import Relay
from app.chat.room_log import RoomLog
from app.chat.timefmt import utcnow
from app.contracts import ClientConnection
from app.destinations import RoomKind
from app.errors import BackendError, BadRequest, Forbidden, NotFound

__all__ = ["ProfileLookup", "MessageObserver", "Authors", "TypingLimiter", "Messaging", "Stored", "MESSAGE_ID_HEADER", "CURRENT_COMMUNITY"]

# The RECEIPT header that carries a stored message's id (an addition to protocol.md).
MESSAGE_ID_HEADER = "message-id"
# ClientConnection.attributes key: the community this connection last subscribed to.
CURRENT_COMMUNITY = "current-community"

log = logging.getLogger(__name__)

_EDITABLE_TYPES = (None, "reply")


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

    def __init__(self, *, store: MessageWriter, outbox: Outbox, relay: Relay, room_log: RoomLog, bus: EventBus,
                 access: Access, authors: Authors, observer: MessageObserver, typing_interval_s: float,
                 now: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._outbox = outbox
        self._relay = relay
        self._bus = bus
        self._access = access
        self._authors = authors
        self._observer = observer
        self._now = now
        self._typing = TypingLimiter(typing_interval_s, monotonic)
        self._room_log = room_log
        self._commit = GroupCommit(store, room_log)

    def send_message(self, connection: ClientConnection, command: SendMessage) -> Stored:
        room = self._access.require_room(connection.user_id, command.room)
        self._relay.check_capacity()
        author = self._authors.resolve(connection.user_id, command.name, command.profile_image)
        message = ChatMessage(kind=room.kind, channel_id=room.channel_id, community_id=room.community_id,
                              user_id=connection.user_id, content=command.content,
                              created_at=self._now(), name=author.name, profile_image=author.image,
                              nonce=command.nonce)
        return Stored(self._commit.submit(message, self._stored_new))

    def send_reply(self, connection: ClientConnection, command: SendReply) -> Stored:
        room = self._access.require_room(connection.user_id, command.room)
        self._relay.check_capacity()
        parent = self._store.get(room.kind, command.parent_id)
        if parent is None or parent.channel_id != room.channel_id or parent.community_id != room.community_id:
            raise NotFound("parentId: no such message in this room")  # another community's is not quoted
        author = self._authors.resolve(connection.user_id, command.name, command.profile_image)
        message = ChatMessage(kind=room.kind, channel_id=room.channel_id, community_id=room.community_id,
                              user_id=connection.user_id, content=command.content,
                              created_at=self._now(), name=author.name, profile_image=author.image,
                              type="reply", parent_id=parent.id,
                              parent_name=self._authors.name_of(parent.user_id, parent.name),
                              parent_content=parent.content, nonce=command.nonce)
        return Stored(self._commit.submit(message, self._stored_new))

    def post_file(self, message: ChatMessage) -> ChatMessage:
        """Store a file message whose room the caller already checked; the stored message.

        Blocks until stored; raises why not. The relay publishes it.
        """
        self._relay.check_capacity()
        return self._commit.submit(message, self._relay.message_stored).wait()

    def modify(self, connection: ClientConnection, command: Modify) -> None:
        room, original = self._changed_message(connection.user_id, command.room, command.message_id)
        if original.type not in _EDITABLE_TYPES:
            raise BadRequest("id: only text messages can be edited")  # a file message's content is its URL
        self._relay.check_capacity()
        change = self._record(PendingChange("modify", room.kind, room.channel_id, original.id,
                                            content=command.content, edited_at=self._now(),
                                            community_id=room.community_id))
        assert change.edited_at is not None
        edited = self._store.edit(room.kind, original.id, connection.user_id, command.content, change.edited_at)
        if edited is None:
            self._not_made(change)
            raise NotFound("id: no such message")  # deleted between the read and the edit
        self._made(change, edited)

    def delete(self, connection: ClientConnection, command: Delete) -> None:
        room, original = self._changed_message(connection.user_id, command.room, command.message_id)
        self._relay.check_capacity()
        change = self._record(PendingChange("delete", room.kind, room.channel_id, original.id,
                                            community_id=room.community_id))
        removed = self._store.delete(room.kind, original.id, connection.user_id)
        if removed is None:
            self._not_made(change)
            raise NotFound("id: no such message")
        self._made(change, None)

    def _record(self, change: PendingChange) -> PendingChange:
        """Number a change and record the intent (so its number is the one the sweep publishes)."""
        return self._outbox.add_change(self._room_log.number_change(change))

    def _not_made(self, change: PendingChange) -> None:
        self._outbox.drop_change(change.id)
        assert change.seq is not None
        self._room_log.void([(change.room, change.seq)])

    def _made(self, change: PendingChange, message: ChatMessage | None) -> None:
        try:
            record = self._room_log.keep_change(change, message)
        except BackendError:
            log.warning("could not keep a stored %s in its room's log; the outbox sweep will", change.action)
            return
        self._relay.change_stored(change, message, record)

    def typing(self, connection: ClientConnection, command: Typing) -> PublishAck | None:
        """Publish a typing event; None when rate-limited or unscoped (dropped, still acknowledged).

        The original clients send no ``communityId`` with typing: in a channel no list names,
        the community this connection last subscribed to (``/topic/community/{C}``) is assumed;
        without one the event has no audience and is dropped.
        """
        claimed = command.room
        if claimed.kind == "channel" and claimed.community_id is None \
                and self._access.scope.owner(claimed.channel_id) is None:
            current = connection.attributes.get(CURRENT_COMMUNITY)
            if current is None:
                return None
            claimed = replace(claimed, community_id=current)
        room = self._access.require_room(connection.user_id, claimed)
        if not self._typing.allow(connection.user_id, room.kind, room.channel_id):
            return None
        name = self._authors.name_of(connection.user_id, command.name)
        return self._bus.publish_nowait(events.etc_topic(room.kind), events.record_key(room.channel_id),
                                        events.typing_record(room.channel_id, name, room.community_id))

    def _changed_message(self, user_id: int, claimed: RoomRef, message_id: str) -> tuple[RoomRef, ChatMessage]:
        """The room (community filled in) and the author's own message an edit or delete names.

        The original clients name no community with an edit or delete; a channel's message
        carries the community it was written in, and the editor must still be a member of it.
        """
        if claimed.kind == "direct" or claimed.community_id is not None \
                or self._access.scope.owner(claimed.channel_id) is not None:
            room = self._access.require_room(user_id, claimed)
            return room, self._own_message(user_id, room.kind, room.channel_id, message_id, room.community_id)
        original = self._own_message(user_id, claimed.kind, claimed.channel_id, message_id)
        room = self._access.require_room(user_id, replace(claimed, community_id=original.community_id))
        return room, original

    def _own_message(self, user_id: int, kind: RoomKind, channel_id: int, message_id: str,
                     community_id: int | None = None) -> ChatMessage:
        message = self._store.get(kind, message_id)
        if message is None or message.channel_id != channel_id:
            raise NotFound("id: no such message in this room")
        if community_id is not None and message.community_id not in (None, community_id):
            raise NotFound("id: no such message in this room")  # another community's message
        if message.user_id != user_id:
            raise Forbidden("only the author may change a message")
        return message

    def _stored_new(self, stored: ChatMessage, record: events.Record) -> None:
        """A new message or reply was stored and kept (in the committer): publish it, notify."""
        self._relay.message_stored(stored, record)
        self._observer.message_stored(stored)


class Stored:
    """The ``Pending`` of a submitted message: returns once it is stored, with its id for the RECEIPT."""

    __slots__ = ("_submitted",)

    def __init__(self, submitted: Submitted) -> None:
        self._submitted = submitted

    def wait(self) -> Mapping[str, str]:
        """The RECEIPT's added headers once stored durably; raise why not."""
        return {MESSAGE_ID_HEADER: self._submitted.wait().id}
