"""In-memory stand-ins for the chat pipeline's backends, for unit tests (test code only).

Each fake implements the same interface as its real counterpart (``tests/contract`` runs the
same cases against a fake and its real backend) and records what it was asked to do, so a test can assert on effects (what was stored, what was published, what
was delivered) without a broker, MongoDB, Redis or presence. ``fail_*`` switches make a
dependency fail the way the real one does (``BackendUnavailable``).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Mapping, Sequence

from app.chat.model import CHANGE_PLACE, ChatMessage, Claimed, PendingChange, Latest, Repeated, RoomActivity, RoomEvent, RoomKey
from app.destinations import (HOME, RoomKind, is_text_location, membership_entry, parse_room_key, room_key,
                              voice_location)
from app.errors import BackendError, BackendUnavailable, BadRequest, ChatServerError
from app.presence_client import LogoutResult, Move  # the fake answers in the real client's types

__all__ = [
    "MemoryMessageStore",
    "MemoryOutbox",
    "MemoryEventLog",
    "memory_room_log",
    "RecordingEventBus",
    "MemoryAck",
    "MemoryMembership",
    "MemoryReadMarkers",
    "MemoryPresence",
    "MemoryProfiles",
    "RecordingDelivery",
    "RecordingHttp",
    "Published",
    "Profile",
    "LogoutResult",
    "Move",
]


class MemoryMessageStore:
    """``MessageWriter`` on a dict; ids look like ObjectIds.

    As on MongoDB, ``insert_many`` marks each new message unpublished (``unpublished``: the
    outbox, see :class:`MemoryOutbox`) and maps an author's repeated nonce to the message
    stored the first time (``Repeated``).
    """

    def __init__(self) -> None:
        self.messages: dict[tuple[RoomKind, str], ChatMessage] = {}
        self.unpublished: dict[tuple[RoomKind, str], datetime] = {}  # ref -> unpublished since
        self.claimed_by: dict[tuple[RoomKind, str], str] = {}
        self._ids = itertools.count(1)
        self.fail = False
        self.batches: list[int] = []  # the size of each insert_many call, in order
        self.now = datetime.utcnow

    def _check(self) -> None:
        if self.fail:
            raise BackendUnavailable()

    def insert(self, message: ChatMessage) -> ChatMessage:
        """One message stored as already published (seeding)."""
        self._check()
        stored = message.with_id(f"{next(self._ids):024x}")
        self.messages[(stored.kind, stored.id)] = stored
        return stored

    def insert_many(self, messages: Sequence[ChatMessage]) -> list[ChatMessage | Repeated | ChatServerError]:
        self.batches.append(len(messages))
        results: list[ChatMessage | Repeated | ChatServerError] = []
        for message in messages:
            original = self._same_nonce(message)
            if original is not None and original.channel_id == message.channel_id:
                results.append(Repeated(original))
                continue
            if original is not None:
                results.append(BadRequest("nonce: already used for a message in another room"))
                continue
            try:
                stored = self.insert(message)
            except BackendError as exc:
                results.append(exc)
                continue
            self.unpublished[(stored.kind, stored.id)] = self.now()
            results.append(stored)
        return results

    def _same_nonce(self, message: ChatMessage) -> ChatMessage | None:
        if message.nonce is None:
            return None
        return next((m for (kind, _), m in self.messages.items()
                     if kind == message.kind and m.user_id == message.user_id and m.nonce == message.nonce), None)

    def get(self, kind: RoomKind, message_id: str) -> ChatMessage | None:
        self._check()
        return self.messages.get((kind, message_id))

    def edit(self, kind: RoomKind, message_id: str, author_id: int, content: str,
             edited_at: datetime) -> ChatMessage | None:
        self._check()
        current = self.messages.get((kind, message_id))
        if current is None or current.user_id != author_id:
            return None
        edited = replace(current, content=content, edited_at=edited_at)
        self.messages[(kind, message_id)] = edited
        return edited

    def delete(self, kind: RoomKind, message_id: str, author_id: int) -> ChatMessage | None:
        self._check()
        current = self.messages.get((kind, message_id))
        if current is None or current.user_id != author_id:
            return None
        self.unpublished.pop((kind, message_id), None)
        return self.messages.pop((kind, message_id))

    def in_room(self, kind: RoomKind, channel_id: int) -> list[ChatMessage]:
        return [m for (k, _), m in self.messages.items() if k == kind and m.channel_id == channel_id]


class MemoryOutbox:
    """``Outbox`` over a :class:`MemoryMessageStore`'s unpublished marks and recorded changes."""

    def __init__(self, store: MemoryMessageStore) -> None:
        self.store = store
        self.changes: dict[str, tuple[PendingChange, datetime, str | None]] = {}  # id -> (change, since, claimer)
        self._ids = itertools.count(1)
        self.fail = False

    def _check(self) -> None:
        if self.fail:
            raise BackendUnavailable()

    def add_change(self, change: PendingChange) -> PendingChange:
        self._check()
        recorded = replace(change, id=f"{next(self._ids):024x}")
        self.changes[recorded.id] = (recorded, self.store.now(), None)
        return recorded

    def drop_change(self, change_id: str) -> None:
        self._check()
        self.changes.pop(change_id, None)

    def published(self, refs: Sequence[tuple[str, str]]) -> None:
        self._check()
        for place, ident in refs:
            if place == CHANGE_PLACE:
                self.changes.pop(ident, None)
            else:
                self.store.unpublished.pop((place, ident), None)  # type: ignore[arg-type]

    def claim_stale(self, older_than: datetime, owner: str, limit: int) -> Claimed:
        self._check()
        now = self.store.now()
        stale = [ref for ref, since in self.store.unpublished.items() if since < older_than][:limit]
        for ref in stale:
            self.store.unpublished[ref] = now
        messages = [self.store.messages[ref] for ref in stale if ref in self.store.messages]
        changes = [change for change, since, _ in self.changes.values() if since < older_than][:limit]
        for change in changes:
            self.changes[change.id] = (change, now, owner)
        return Claimed(messages=messages, changes=changes)

    def forget_nonces(self, older_than: datetime) -> int:
        self._check()
        old = [key for key, message in self.store.messages.items()
               if message.nonce is not None and message.created_at < older_than]
        for key in old:
            self.store.messages[key] = replace(self.store.messages[key], nonce=None)
        return len(old)


@dataclass(frozen=True)
class Published:
    topic: str
    key: str
    value: bytes


@dataclass(frozen=True)
class MemoryAck:
    """``PublishAck`` of the fake: already decided when the record was handed over."""

    error: Exception | None = None

    def wait(self) -> None:
        if self.error is not None:
            raise self.error


class RecordingEventBus:
    """``EventBus`` that keeps every acknowledged record; ``fail`` makes the ack fail.

    The record is taken (or refused) when it is handed over; a refusal shows in ``wait()``,
    as a lost broker ack does.
    """

    def __init__(self) -> None:
        self.records: list[Published] = []
        self.fail = False

    def publish(self, topic: str, key: str, value: bytes) -> None:
        self.publish_nowait(topic, key, value).wait()

    def publish_nowait(self, topic: str, key: str, value: bytes) -> MemoryAck:
        if self.fail:
            return MemoryAck(BackendUnavailable())
        self.records.append(Published(topic, key, value))
        return MemoryAck()

    def on(self, topic: str) -> list[Published]:
        return [r for r in self.records if r.topic == topic]


class MemoryMembership:
    """``app.chat.membership.Membership`` without a community service: lists set by the test.

    The setters are those of the membership PUT endpoints (``set_room_members``, ...);
    ``set_room``/``set_community`` are shorthands. As on Redis, a list keeps its first
    occurrence of each id, a channel's community is the last one whose list named it (until a
    list drops it), and an unknown room has no members.
    """

    def __init__(self) -> None:
        self.rooms: dict[int, list[int]] = {}
        self.communities: dict[int, list[int]] = {}
        self.channel_lists: dict[int, list[int]] = {}  # community -> its text channels
        self.channels: dict[int, int] = {}  # channel -> owning community (the reverse index)
        # Channels only the community service knows (not in the reverse index yet).
        self.unindexed: dict[int, list[int]] = {}

    # -- overwrites --------------------------------------------------------------------------

    def set_room_members(self, room_id: int, user_ids: Sequence[int]) -> None:
        self.rooms[room_id] = _unique(user_ids)

    def set_community_members(self, community_id: int, user_ids: Sequence[int]) -> None:
        self.communities[community_id] = _unique(user_ids)

    def set_community_channels(self, community_id: int, channel_ids: Sequence[int]) -> None:
        wanted = _unique(channel_ids)
        for channel_id in set(self.channel_lists.get(community_id, ())) - set(wanted):
            self.channels.pop(channel_id, None)
        self.channel_lists[community_id] = wanted
        for channel_id in wanted:
            self.channels[channel_id] = community_id

    def set_room(self, room_id: int, members: Sequence[int]) -> None:
        self.set_room_members(room_id, members)

    def set_community(self, community_id: int, members: Sequence[int], channels: Sequence[int] | None = None) -> None:
        """Members, and the channel list too when ``channels`` is given."""
        self.set_community_members(community_id, members)
        if channels is not None:
            self.set_community_channels(community_id, channels)

    # -- questions ---------------------------------------------------------------------------

    def is_room_member(self, room_id: int, user_id: int) -> bool:
        return user_id in self.room_members(room_id)

    def room_members(self, room_id: int) -> list[int]:
        return list(self.rooms.get(room_id, ()))

    def is_community_member(self, community_id: int, user_id: int) -> bool:
        return user_id in self.community_members(community_id)

    def community_members(self, community_id: int) -> list[int]:
        return list(self.communities.get(community_id, ()))

    def community_channels(self, community_id: int) -> list[int]:
        return list(self.channel_lists.get(community_id, ())) + list(self.unindexed.get(community_id, ()))

    def channel_community(self, channel_id: int) -> int | None:
        return self.channels.get(channel_id)

    def channel_in_community(self, channel_id: int, community_id: int) -> bool:
        return channel_id in self.community_channels(community_id)

    def listed_channels(self, community_id: int) -> list[int] | None:
        if community_id not in self.channel_lists and community_id not in self.unindexed:
            return None
        return self.community_channels(community_id)

    def community_member_set(self, community_id: int) -> frozenset[int]:
        return frozenset(self.community_members(community_id))

    def cached_communities(self, user_id: int) -> list[int]:
        return [c for c, members in sorted(self.communities.items()) if user_id in members]

    def user_rooms(self, user_id: int) -> list[str]:
        rooms = [membership_entry("community", c) for c, members in sorted(self.communities.items()) if user_id in members]
        rooms += [membership_entry("direct", r) for r, members in sorted(self.rooms.items()) if user_id in members]
        return rooms


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in ids))


class MemoryReadMarkers:
    """``messageTime`` as a dict of location → {user id → time}; unread counts come from the
    DM messages of ``store`` (none without one), by the rule of ``MongoReadSide``: others'
    messages strictly after the user's mark, and the room's latest time."""

    def __init__(self, store: MemoryMessageStore | None = None) -> None:
        self.read: dict[str, dict[int, datetime]] = {}
        self._store = store

    def mark_read(self, location: str, user_id: int, at: datetime) -> None:
        if parse_room_key(location) is None:
            return  # only text channels and DM rooms have marks: home, voice and junk are ignored
        self.read.setdefault(location, {})[user_id] = at

    def room_activity(self, user_id: int, room_ids: Sequence[int]) -> list[RoomActivity]:
        return [self._activity(user_id, room_id) for room_id in dict.fromkeys(room_ids)]

    def _activity(self, user_id: int, room_id: int) -> RoomActivity:
        messages = self._store.in_room("direct", room_id) if self._store is not None else []
        mark = self.read.get(room_key("direct", room_id), {}).get(user_id)
        unread = [m for m in messages if m.user_id != user_id and (mark is None or m.created_at > mark)]
        latest = max((m.created_at for m in messages), default=None)
        return RoomActivity(room_id, len(unread), latest)


@dataclass
class MemoryPresence:
    """``PresenceClient`` on dicts; ``down`` fails every call; ``calls`` records them.

    As the presence server does: a new session starts at ``home``; a move must name a text
    location and a notification target list a room key (``BadRequest`` otherwise); entering a
    voice channel leaves the previous one; the user's last logout leaves voice too; occupancy
    lists only users with a live session.
    """

    down: bool = False
    sessions: dict[str, int] = field(default_factory=dict)
    locations: dict[int, str] = field(default_factory=dict)
    voice: dict[int, dict[int, list[str]]] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)

    def _call(self, *call: object) -> None:
        self.calls.append(call)
        if self.down:
            raise BackendUnavailable()

    def login(self, session_id: str, user_id: int, node_id: str) -> bool:
        self._call("login", session_id, user_id, node_id)
        first = user_id not in self.sessions.values()
        self.sessions[session_id] = user_id
        self.locations.setdefault(user_id, HOME)
        return first

    def logout(self, session_id: str, node_id: str) -> LogoutResult:
        self._call("logout", session_id)
        user_id = self.sessions.pop(session_id, None)
        if user_id is None:
            return LogoutResult(None, None, False)
        last = user_id not in self.sessions.values()
        location = self.locations.pop(user_id, None) if last else self.locations.get(user_id)
        if last:
            self._leave_voice(user_id)
        return LogoutResult(user_id, location, last)

    def move(self, user_id: int, session_id: str, location: str) -> Move:
        self._call("move", user_id, session_id, location)
        if not is_text_location(location):
            raise BadRequest("channel_id: must be a text location")
        last = self.locations.get(user_id)
        self.locations[user_id] = location
        return Move(last, location)

    def notify_targets(self, room_key: str, member_ids: Sequence[int]) -> list[int]:
        self._call("notify_targets", room_key, list(member_ids))
        if parse_room_key(room_key) is None:
            raise BadRequest(f"not a room key: {room_key!r}")
        return [m for m in member_ids if self.locations.get(m) != room_key]

    def before_enter(self, user_id: int, community_id: int) -> str:
        self._call("before_enter", user_id, community_id)
        return self._snapshot(community_id)

    def enter(self, user_id: int, community_id: int, voice_channel_id: int) -> str:
        self._call("enter", user_id, community_id, voice_channel_id)
        self._leave_voice(user_id)
        channels = self.voice.setdefault(community_id, {})
        channels.setdefault(voice_channel_id, []).append(str(user_id))
        if user_id in self.locations:
            self.locations[user_id] = voice_location(community_id, voice_channel_id)
        return self._snapshot(community_id)

    def renew_lease(self, node_id: str) -> None:
        self._call("renew_lease", node_id)

    def sync(self, node_id: str, sessions: Mapping[str, int]) -> None:
        self._call("sync", node_id, dict(sessions))
        self.sessions.update(sessions)

    def close(self) -> None:
        pass

    def _leave_voice(self, user_id: int) -> None:
        for channels in self.voice.values():
            for users in channels.values():
                while str(user_id) in users:
                    users.remove(str(user_id))

    def _snapshot(self, community_id: int) -> str:
        online = {str(user) for user in self.sessions.values()}
        channels = self.voice.get(community_id, {})
        return json.dumps({str(c): [u for u in users if u in online] for c, users in channels.items()},
                          separators=(",", ":"))


@dataclass(frozen=True)
class Profile:
    name: str
    image: str | None


class MemoryProfiles:
    """Auth-service profiles by user id; ``down`` makes lookups fail."""

    def __init__(self, profiles: Mapping[int, Profile] | None = None) -> None:
        self.profiles = dict(profiles or {})
        self.down = False

    def lookup(self, user_id: int) -> Profile | None:
        if self.down:
            raise BackendUnavailable()
        return self.profiles.get(user_id)


class RecordingDelivery:
    """``LocalDelivery`` that keeps ``(destination, body)`` pairs, and each one's audience."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []
        self.audiences: list[object] = []

    def deliver(self, destination: str, body: bytes, seq: int | None = None, audience: object = None) -> int:
        self.delivered.append((destination, body))
        self.audiences.append(audience)
        return 1

    def flush(self) -> None:
        pass


class RecordingHttp:
    """``ServiceHttp.post_json`` recorder; ``fail`` makes calls raise."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, object]] = []
        self.fail = False

    def post_json(self, url: str, body: object) -> object:
        if self.fail:
            raise BackendUnavailable()
        self.posts.append((url, body))
        return None


class MemoryEventLog:
    """``EventLog`` in memory: counters, the log, and when each counter last moved."""

    def __init__(self, now=datetime.utcnow) -> None:
        self.counters: dict[RoomKey, int] = {}
        self.counted: dict[RoomKey, int] = {}  # new messages counted per room (allocate - uncount)
        self.moved: dict[RoomKey, datetime] = {}
        self.events: dict[RoomKey, dict[int, RoomEvent]] = {}
        self.fail_allocate = False
        self.fail_append = False
        self.after_calls: list[tuple[RoomKey, int]] = []
        self.expected: dict[RoomKey, int] = {}  # the hints of expect (numbering needs none here)
        self._now = now

    def allocate(self, counts: Mapping[RoomKey, int], messages: Sequence[ChatMessage] = ()) -> dict[RoomKey, int]:
        if self.fail_allocate:
            raise BackendUnavailable("database unavailable")
        firsts = {}
        for room, count in counts.items():
            firsts[room] = self.counters.get(room, 0) + 1
            self.counters[room] = firsts[room] + count - 1
            self.moved[room] = self._now()
        self._count(messages, 1)
        return firsts

    def uncount(self, messages: Sequence[ChatMessage]) -> None:
        self._count(messages, -1)

    def expect(self, room: RoomKey, seq: int) -> None:
        self.expected[room] = max(seq, self.expected.get(room, 0))

    def _count(self, messages: Sequence[ChatMessage], sign: int) -> None:
        for message in messages:
            self.counted[message.room] = self.counted.get(message.room, 0) + sign

    def append(self, entries: Sequence[RoomEvent]) -> None:
        if self.fail_append:
            raise BackendUnavailable("database unavailable")
        for entry in entries:
            self.events.setdefault(entry.room, {}).setdefault(entry.seq, entry)

    def after(self, room: RoomKey, seq: int, limit: int) -> list[RoomEvent]:
        self.after_calls.append((room, seq))
        kept = self.events.get(room, {})
        return [kept[n] for n in sorted(kept) if seq < n <= seq + limit]

    def latest(self, room: RoomKey) -> Latest:
        return Latest(self.counters.get(room, 0), self.moved.get(room))

    def went_quiet(self, since: datetime, until: datetime) -> dict[RoomKey, int]:
        return {room: self.counters[room] for room, at in self.moved.items() if since <= at < until}

    def prune(self, older_than: datetime) -> int:
        pruned = 0
        for kept in self.events.values():
            for seq in [n for n, event in kept.items() if event.at < older_than]:
                del kept[seq]
                pruned += 1
        return pruned


def memory_room_log(event_log: "MemoryEventLog | None" = None, **options):
    """A ``RoomLog`` over a ``MemoryEventLog`` (a new one unless given)."""
    from app.chat.room_log import RoomLog
    values = dict(replay_max_events=5000, retention_s=7 * 86400)
    values.update(options)
    return RoomLog(event_log if event_log is not None else MemoryEventLog(), **values)
