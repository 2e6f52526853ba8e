"""The typed fields of presence requests, checked against the one grammar.

Owns the accessors the handler reads a :class:`~app.tcp_presence.codec.Request` with:
ids (positive int64 in canonical decimal, W-6), id lists, ``sync`` session pairs, text
locations, room keys and the channel of ``enter``/``signaling``. Every id, room key and
location is parsed by :mod:`app.destinations`; nothing here spells a pattern of its own.
Each accessor raises the request's :class:`~app.tcp_presence.codec.RequestError`
(``missing field X`` / ``invalid field X``), whose text is the error reply.
"""

from __future__ import annotations

from typing import Any, Final

from app.destinations import RoomKind, is_text_location, parse_id, parse_room_key

from .codec import SESSION_ID_PATTERN, Request, RequestError

__all__ = [
    "required_id",
    "optional_id",
    "call_community_id",
    "id_list",
    "session_pairs",
    "text_location",
    "room_key",
    "channel_number",
]

# §8: the signaling server sends community 0 (or 'null') when the call is a DM call.
_NO_COMMUNITY: Final = "0"


def required_id(request: Request, name: str) -> int:
    """The id in field ``name``, which must be present."""
    value = optional_id(request, name, required=True)
    assert value is not None  # required=True raised otherwise
    return value


def optional_id(request: Request, name: str, *, required: bool = False) -> int | None:
    """The id in field ``name`` (text or a JSON number), None when absent."""
    text = request.text(name, required=required)
    if text is None:
        return None
    ident = parse_id(text)
    if ident is None:
        raise request.error(f"invalid field {name}")
    return ident


def call_community_id(request: Request) -> int | None:
    """``signaling``'s community: None for a DM call (absent, 'null' or 0)."""
    text = request.text("community_id", required=False)
    if text is None or text == _NO_COMMUNITY:
        return None
    return optional_id(request, "community_id")


def _required_list(request: Request, name: str) -> tuple[list[Any], RequestError]:
    """The list field ``name`` and the error for a bad item of it."""
    value = request.fields.get(name)
    if value is None:
        raise request.error(f"missing field {name}")
    invalid = request.error(f"invalid field {name}")
    if not isinstance(value, list):
        raise invalid
    return value, invalid


def id_list(request: Request, name: str) -> list[int]:
    """A required list of ids (``ids=[9, 12]`` or ``"ids":["9",12]``)."""
    value, invalid = _required_list(request, name)
    return [_id_item(item, invalid) for item in value]


def session_pairs(request: Request, name: str) -> list[tuple[str, int]]:
    """``[["sid","5"], ...]`` (sync): session ids with their user ids."""
    value, invalid = _required_list(request, name)
    pairs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise invalid
        if not SESSION_ID_PATTERN.fullmatch(item[0]):
            raise invalid
        pairs.append((item[0], _id_item(item[1], invalid)))
    return pairs


def text_location(request: Request, name: str) -> str:
    """A required location outside voice: ``home`` or a room key (§7.5)."""
    text = request.text(name)
    assert text is not None
    if not is_text_location(text):
        raise request.error(f"invalid field {name}")
    return text


def room_key(request: Request, name: str) -> str:
    """A required room key, ``r-{id}`` or ``c-{id}``."""
    text = request.text(name)
    assert text is not None
    if parse_room_key(text) is None:
        raise request.error(f"invalid field {name}")
    return text


def channel_number(request: Request, kind: RoomKind) -> int:
    """The id of ``channel_id``, which must be a room key of ``kind`` (``c-12`` / ``r-17``)."""
    text = request.text("channel_id")
    assert text is not None
    key = parse_room_key(text)
    if key is None or key.kind != kind:
        raise request.error("invalid field channel_id")
    return key.ident


def _id_item(item: Any, invalid: RequestError) -> int:
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise invalid
    ident = parse_id(str(item))
    if ident is None:
        raise invalid
    return ident
