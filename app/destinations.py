"""The one grammar of ids, STOMP destinations, room keys and presence locations.

Every module that builds or reads one of these strings calls this module; nothing else
spells a pattern. Pure: stdlib only.

Ids
    Positive int64 values written in canonical decimal: ``[1-9][0-9]{0,18}`` and at most
    ``MAX_ID``. A leading zero, a sign, spaces or ``0`` are not ids.

STOMP destinations (protocol.md §3, W-3, W-4)
    ``/topic/direct/{roomId}``, ``/topic/group/{channelId}``, ``/topic/community/{communityId}``
    are the only ones a client subscribes to; only the server publishes under ``/topic``.
    Clients SEND to ``/kafka/<action>`` (``APP_PREFIX``).

Room keys and locations (protocol.md §7.5)
    ``r-{roomId}`` is a DM room, ``c-{channelId}`` a community text or voice channel.
    A text location is ``home`` or a room key; a voice location is ``com{C},c-{X}``.

Membership entries (protocol.md §5)
    ``direct/{roomId}`` and ``community/{communityId}``, as the community service lists a
    user's rooms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_ID",
    "ID_DIGITS",
    "APP_PREFIX",
    "HOME",
    "TopicKind",
    "RoomKind",
    "Topic",
    "RoomKey",
    "VoiceLocation",
    "parse_id",
    "parse_topic",
    "topic",
    "has_wildcard",
    "is_server_topic",
    "room_key",
    "parse_room_key",
    "is_text_location",
    "voice_location",
    "parse_voice_location",
    "parse_voice_channel",
    "membership_entry",
    "parse_membership_entry",
]

MAX_ID: Final = 2**63 - 1  # ids are stored as int64
ID_DIGITS: Final = r"[1-9][0-9]{0,18}"
APP_PREFIX: Final = "/kafka/"
HOME: Final = "home"

TopicKind = Literal["direct", "group", "community"]
RoomKind = Literal["direct", "channel"]

_TOPIC_ROOT: Final = "/topic"
_WILDCARDS: Final = ("*", "#", ">")
_ID: Final = re.compile(ID_DIGITS)
_TOPIC: Final = re.compile(rf"/topic/(direct|group|community)/({ID_DIGITS})")
_ROOM_KEY: Final = re.compile(rf"([cr])-({ID_DIGITS})")
_VOICE_LOCATION: Final = re.compile(rf"com({ID_DIGITS}),c-({ID_DIGITS})")
_MEMBERSHIP_ENTRY: Final = re.compile(rf"(direct|community)/({ID_DIGITS})")
_KEY_PREFIX: Final = {"direct": "r", "channel": "c"}
_KEY_KIND: Final = {"r": "direct", "c": "channel"}


def parse_id(text: str) -> int | None:
    """The id ``text`` spells in canonical decimal, or None."""
    if not _ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _id_or_none(text: str) -> int | None:
    value = int(text)
    return value if value <= MAX_ID else None


@dataclass(frozen=True, slots=True)
class Topic:
    """A room destination a client may subscribe to: ``/topic/{kind}/{ident}``."""

    kind: TopicKind
    ident: int

    def __str__(self) -> str:
        return topic(self.kind, self.ident)


def topic(kind: TopicKind, ident: int) -> str:
    """The destination of room ``ident`` of ``kind``: ``/topic/direct/7``."""
    return f"{_TOPIC_ROOT}/{kind}/{ident}"


def parse_topic(destination: str) -> Topic | None:
    """The room destination ``destination`` names exactly, or None."""
    match = _TOPIC.fullmatch(destination)
    if match is None:
        return None
    ident = _id_or_none(match.group(2))
    return None if ident is None else Topic(match.group(1), ident)  # type: ignore[arg-type]


def has_wildcard(destination: str) -> bool:
    """Whether ``destination`` holds a broker pattern (``*``, ``#``, ``>``); none is expanded."""
    return any(mark in destination for mark in _WILDCARDS)


def is_server_topic(destination: str) -> bool:
    """Whether ``destination`` is under ``/topic``, where only the server publishes."""
    return destination == _TOPIC_ROOT or destination.startswith(_TOPIC_ROOT + "/")


@dataclass(frozen=True, slots=True)
class RoomKey:
    """``r-{id}`` (a DM room, kind ``direct``) or ``c-{id}`` (a channel, kind ``channel``)."""

    kind: RoomKind
    ident: int

    def __str__(self) -> str:
        return room_key(self.kind, self.ident)


def room_key(kind: RoomKind, ident: int) -> str:
    """``r-7`` for DM room 7, ``c-7`` for channel 7."""
    return f"{_KEY_PREFIX[kind]}-{ident}"


def parse_room_key(text: str) -> RoomKey | None:
    """The room ``text`` (``r-7``, ``c-7``) names, or None."""
    match = _ROOM_KEY.fullmatch(text)
    if match is None:
        return None
    ident = _id_or_none(match.group(2))
    return None if ident is None else RoomKey(_KEY_KIND[match.group(1)], ident)  # type: ignore[arg-type]


def is_text_location(text: str) -> bool:
    """Whether ``text`` is ``home`` or a room key: where a user can be outside voice."""
    return text == HOME or parse_room_key(text) is not None


@dataclass(frozen=True, slots=True)
class VoiceLocation:
    """A user in voice channel ``channel_id`` of community ``community_id``."""

    community_id: int
    channel_id: int

    def __str__(self) -> str:
        return voice_location(self.community_id, self.channel_id)


def voice_location(community_id: int, channel_id: int) -> str:
    """``com3,c-12``: the location of a user in voice channel 12 of community 3."""
    return f"com{community_id},c-{channel_id}"


def parse_voice_location(text: str) -> VoiceLocation | None:
    """The voice channel ``text`` (``com3,c-12``) names, or None."""
    match = _VOICE_LOCATION.fullmatch(text)
    if match is None:
        return None
    community, channel = _id_or_none(match.group(1)), _id_or_none(match.group(2))
    if community is None or channel is None:
        return None
    return VoiceLocation(community, channel)


def parse_voice_channel(text: str) -> int | None:
    """The channel id of ``c-12`` (or of a bare ``12``), as signaling servers send it."""
    key = parse_room_key(text)
    if key is not None:
        return key.ident if key.kind == "channel" else None
    return parse_id(text)


def membership_entry(kind: Literal["direct", "community"], ident: int) -> str:
    """``direct/7`` or ``community/3``: one entry of a user's room list."""
    return f"{kind}/{ident}"


def parse_membership_entry(text: str) -> tuple[Literal["direct", "community"], int] | None:
    """The kind and id of a room-list entry (``direct/7``), or None."""
    match = _MEMBERSHIP_ENTRY.fullmatch(text)
    if match is None:
        return None
    ident = _id_or_none(match.group(2))
    return None if ident is None else (match.group(1), ident)  # type: ignore[return-value]
