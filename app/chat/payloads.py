"""Validation of SEND bodies: raw bytes in, one typed, trusted command out.

Rules (issue 3 item 1-2, protocol.md §2.6, W-1/W-8/W-9/W-29):

- The destination chooses the command; the payload's ``type`` is ignored, as are unknown
  fields and every client-sent identity or server-owned field (``userId``/``user_id``,
  ``id`` on send/reply, ``localDateTime``, ``read``, ``thumbnail``...).
- A missing or invalid field raises ``BadRequest("<field>: <what is wrong>")`` before
  anything is stored.
- Ids are positive int64 integers; canonical id strings (``"5"``, see ``app.destinations``)
  are accepted, anything else (``"05"``, ``"Optional(5)"``, ``5.5``, ``true``) is refused.
- Text that cannot be stored (a lone surrogate such as ``"\udc80"``, which JSON can spell
  but UTF-8 cannot) is refused here, naming its field, so one bad message never reaches a
  batch write it would fail for everyone else in it.
- A body that is not a JSON object, including one nested deeper than the parser's
  recursion allows, is refused as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.chat.model import NONCE_MAX_CHARS
from app.destinations import HOME, MAX_ID, RoomKind, parse_id, parse_room_key, parse_voice_channel
from app import json_input
from app.errors import BadRequest

__all__ = [
    "NAME_MAX_CHARS",
    "URL_MAX_CHARS",
    "RoomRef",
    "SendMessage",
    "SendReply",
    "Typing",
    "Modify",
    "Delete",
    "JoinLocation",
    "EnterCommunity",
    "EnterVoice",
    "parse_object",
    "positive_id",
    "storable",
    "parse_send_message",
    "parse_send_reply",
    "parse_typing",
    "parse_modify",
    "parse_delete",
    "parse_join",
    "parse_community_signaling",
    "parse_voice_signaling",
]

NAME_MAX_CHARS = 100
URL_MAX_CHARS = 2048
_MESSAGE_ID = re.compile(r"[0-9a-fA-F]{24}")


@dataclass(frozen=True, slots=True)
class RoomRef:
    """The room a SEND addresses: a DM room, or a text channel (with its claimed community)."""

    kind: RoomKind
    channel_id: int
    community_id: int | None


@dataclass(frozen=True, slots=True)
class SendMessage:
    room: RoomRef
    content: str
    name: str | None
    profile_image: str | None
    nonce: str | None = None


@dataclass(frozen=True, slots=True)
class SendReply:
    room: RoomRef
    content: str
    name: str | None
    profile_image: str | None
    parent_id: str
    nonce: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    room: RoomRef
    name: str | None


@dataclass(frozen=True, slots=True)
class Modify:
    room: RoomRef
    message_id: str
    content: str


@dataclass(frozen=True, slots=True)
class Delete:
    room: RoomRef
    message_id: str


@dataclass(frozen=True, slots=True)
class JoinLocation:
    """``home``, ``c-{channelId}`` or ``r-{roomId}``; ``kind``/``ident`` split it."""

    location: str
    kind: str  # "home" | "channel" | "direct"
    ident: int | None


@dataclass(frozen=True, slots=True)
class EnterCommunity:
    community_id: int


@dataclass(frozen=True, slots=True)
class EnterVoice:
    community_id: int
    voice_channel_id: int


# ---------------------------------------------------------------- field readers

def parse_object(body: bytes) -> dict[str, Any]:
    """The SEND body as a JSON object, or ``BadRequest``."""
    try:
        value = json_input.loads(body) if body.strip() else None
    except json_input.MalformedJSON:
        raise BadRequest(f"body: {json_input.MALFORMED_JSON}") from None
    if not isinstance(value, dict):
        raise BadRequest("body: must be a JSON object")
    return value


def _first(payload: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if payload.get(name) is not None:
            return payload[name]
    return None


def positive_id(payload: dict[str, Any], *names: str, required: bool = True) -> int | None:
    """A positive int64 id from the first present of ``names`` (``"5"`` accepted)."""
    value = _first(payload, names)
    if value is None:
        if required:
            raise BadRequest(f"{names[0]}: required")
        return None
    if isinstance(value, str):
        value = parse_id(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise BadRequest(f"{names[0]}: must be a positive integer")
    return value


def _content(payload: dict[str, Any], max_chars: int) -> str:
    value = payload.get("content")
    if value is None:
        raise BadRequest("content: required")
    if not isinstance(value, str):
        raise BadRequest("content: must be a string")
    if not value.strip():
        raise BadRequest("content: must not be empty")
    if len(value) > max_chars:
        raise BadRequest(f"content: longer than {max_chars} characters")
    return storable(value, "content")


def _optional_text(payload: dict[str, Any], field: str, max_chars: int) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: must be a string")
    if len(value) > max_chars:
        raise BadRequest(f"{field}: longer than {max_chars} characters")
    return storable(value, field)


def storable(value: str, field: str) -> str:
    """``value`` if it can be stored as UTF-8; a lone surrogate cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{field}: invalid Unicode") from None
    return value


def _nonce(payload: dict[str, Any], header: str | None) -> str | None:
    """The idempotency key: the ``idempotency-key`` header, else the body's ``nonce`` (string or integer)."""
    if header is not None:
        field, value = "idempotency-key", header
    else:
        field, value = "nonce", payload.get("nonce")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{field}: must be a non-empty string")
    if len(value) > NONCE_MAX_CHARS:
        raise BadRequest(f"{field}: longer than {NONCE_MAX_CHARS} characters")
    return storable(value, field)


def _message_id(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if value is None:
        raise BadRequest(f"{field}: required")
    if not isinstance(value, str) or not _MESSAGE_ID.fullmatch(value):
        raise BadRequest(f"{field}: must be a message id")
    return value.lower()


def _room(payload: dict[str, Any], kind: RoomKind, *, community_required: bool) -> RoomRef:
    channel_id = positive_id(payload, "channelId", "channel_id")
    community_id = None
    if kind == "channel":
        community_id = positive_id(payload, "communityId", "community_id", required=community_required)
    assert channel_id is not None
    return RoomRef(kind, channel_id, community_id)


# ---------------------------------------------------------------- commands

def parse_send_message(body: bytes, kind: RoomKind, max_chars: int,
                       idempotency_key: str | None = None) -> SendMessage:
    payload = parse_object(body)
    return SendMessage(
        room=_room(payload, kind, community_required=True),
        content=_content(payload, max_chars),
        name=_optional_text(payload, "name", NAME_MAX_CHARS),
        profile_image=_optional_text(payload, "profileImage", URL_MAX_CHARS),
        nonce=_nonce(payload, idempotency_key),
    )


def parse_send_reply(body: bytes, kind: RoomKind, max_chars: int,
                     idempotency_key: str | None = None) -> SendReply:
    payload = parse_object(body)
    # parentName/parentContent from the client are not trusted: the handler looks them up.
    return SendReply(
        room=_room(payload, kind, community_required=True),
        content=_content(payload, max_chars),
        name=_optional_text(payload, "name", NAME_MAX_CHARS),
        profile_image=_optional_text(payload, "profileImage", URL_MAX_CHARS),
        parent_id=_message_id(payload, "parentId"),
        nonce=_nonce(payload, idempotency_key),
    )


def parse_typing(body: bytes, kind: RoomKind) -> Typing:
    payload = parse_object(body)
    # The web client sends the typer's nickname as ``content``; ``name`` is accepted too.
    name = _optional_text(payload, "content", NAME_MAX_CHARS)
    if name is None:
        name = _optional_text(payload, "name", NAME_MAX_CHARS)
    return Typing(room=_room(payload, kind, community_required=False), name=name)


def parse_modify(body: bytes, kind: RoomKind, max_chars: int) -> Modify:
    payload = parse_object(body)
    return Modify(room=_room(payload, kind, community_required=False),
                  message_id=_message_id(payload, "id"), content=_content(payload, max_chars))


def parse_delete(body: bytes, kind: RoomKind) -> Delete:
    payload = parse_object(body)
    return Delete(room=_room(payload, kind, community_required=False),
                  message_id=_message_id(payload, "id"))


def parse_join(body: bytes) -> JoinLocation:
    payload = parse_object(body)
    value = _first(payload, ("channel_id", "channelId"))
    if value is None:
        raise BadRequest("channel_id: required")
    if value == HOME:
        return JoinLocation(HOME, HOME, None)
    key = parse_room_key(value) if isinstance(value, str) else None
    if key is None:
        raise BadRequest("channel_id: must be home, c-<channelId> or r-<roomId>")
    return JoinLocation(str(key), key.kind, key.ident)


def parse_community_signaling(body: bytes) -> EnterCommunity:
    payload = parse_object(body)
    community_id = positive_id(payload, "community_id", "communityId")
    assert community_id is not None
    return EnterCommunity(community_id)


def parse_voice_signaling(body: bytes) -> EnterVoice:
    payload = parse_object(body)
    community_id = positive_id(payload, "community_id", "communityId")
    assert community_id is not None
    return EnterVoice(community_id, _voice_channel(payload))


def _voice_channel(payload: dict[str, Any]) -> int:
    """The voice channel of ``c-12``, ``"12"`` or ``12``."""
    value = _first(payload, ("channel_id", "channelId"))
    if isinstance(value, str):
        value = parse_voice_channel(value)
        if value is None:
            raise BadRequest("channel_id: must be a positive integer")
    voice = positive_id({"channel_id": value}, "channel_id")
    assert voice is not None
    return voice
