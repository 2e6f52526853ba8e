"""Kafka records of the chat fan-out and the exact STOMP push bodies they become.

Two shapes live here, and nothing else builds them:

- **Records** (``*_record`` functions) are what a chat node produces to Kafka after it
  stored a change: compact JSON objects with a ``type``, typed ids (numbers) and times
  already in the push format. They are keyed by room id (see ``record_key``).
- **Pushes** (``pushes_for``) are what every node's consumers hand to ``LocalDelivery``:
  ``(destination, body_bytes)`` pairs whose bodies are the exact JSON of protocol.md §2.7
  (every value a JSON string except in the file push and the voice snapshot). A body is
  serialised once per record, however many destinations or subscribers receive it.

Record shapes per topic (``TOPICS`` in app/chat/model.py)::

    chat-server-topic     {"type":"message","id","channelId","userId","name","profileImage","content","time","seq"}
    channel-server-topic  same + "communityId"
    etc-direct-topic      {"type":"typing","channelId","name"}
    etc-community-topic   {"type":"reply", <message fields>, "parentId","parentName","parentContent"}
                          {"type":"modify","id","channelId","userId","content","time","editedAt","seq"}
                          {"type":"delete","id","channelId","seq"}
                          (the typing, modify and delete records of a channel carry "communityId" too)
    file-topic            the file push body itself (FileUploadResponse of §2.7, ``file_push_body``),
                          pushed verbatim; a channel's adds "communityId", taken off before the push

A channel event's ``communityId`` is the community it belongs to (app/chat/channel_scope.py):
``Decoded.channel_scope`` hands it, with the channel, to whoever decides who may see it; it
is never pushed.

``seq`` is the event's number in its room (app/chat/room_log.py), a JSON number, and is
passed on in the push as an added field (a number there too: it is compared, not shown).
Records and pushes of events stored before sequences existed have none.
    state-topic           {"type":"connect"|"disconnect","userId","ids":["community/3","direct/17"]}
                          {"type":"before-enter"|"enter","communityId","state":"<occupancy JSON>"}
                          {"type":"exit-community","typeForExit":"out","communityId","channelId","ids"}
                          {"type":"exit-room","typeForExit":"out","channelId","ids"}
"""

from __future__ import annotations

import json

import orjson
from typing import Any, Callable, Iterable, NamedTuple

from app.chat.model import TOPICS, ChatMessage, PendingChange, RoomKey
from app.chat.timefmt import iso_local, java_local_datetime
from app.destinations import RoomKind, parse_membership_entry, topic

__all__ = [
    "encode",
    "record_key",
    "message_topic",
    "etc_topic",
    "room_destination",
    "message_record",
    "reply_record",
    "modify_record",
    "delete_record",
    "typing_record",
    "presence_record",
    "voice_state_record",
    "exit_community_record",
    "exit_room_record",
    "file_push_body",
    "file_record",
    "new_message_record",
    "change_record",
    "pushes_for",
    "decode",
    "Decoded",
    "Push",
    "Record",
]

Push = tuple[str, bytes]


class Decoded(NamedTuple):
    """One consumed record: its identity (None for events that are never re-published, such as
    typing), the pushes it becomes, and for a numbered room event its room and ``seq``. Two
    records with one identity are the same stored event."""

    identity: tuple[str, ...] | None
    pushes: list[Push]
    room: RoomKey | None = None
    seq: int | None = None
    # (channel id, its community or None) of a channel event: only that community's members see it
    channel_scope: tuple[int, int | None] | None = None


# (topic, key, value) of one record to produce.
Record = tuple[str, str, bytes]

_ROOM_TOPIC_KIND = {"direct": "direct", "channel": "group"}


# Records are parsed on every node for every event; orjson reads them ~5x faster than json.
_loads = orjson.loads


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the one serialisation used for records and pushes."""
    try:
        # orjson writes exactly the bytes of json.dumps(obj, separators=(",", ":"),
        # ensure_ascii=False) for what records and pushes hold, ~20x faster (a push is
        # serialised on every node for every event: bench/FINDINGS.md).
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: only json can write it
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def record_key(room_id: int | str) -> str:
    """Records are keyed by room (or community/user) id so one room stays in order."""
    return str(room_id)


def message_topic(kind: RoomKind) -> str:
    return TOPICS[kind]


def etc_topic(kind: RoomKind) -> str:
    return TOPICS["direct_etc" if kind == "direct" else "channel_etc"]


def room_destination(kind: RoomKind, channel_id: int) -> str:
    """Where a room's pushes go: ``/topic/direct/{roomId}`` or ``/topic/group/{channelId}``."""
    return topic(_ROOM_TOPIC_KIND[kind], channel_id)  # type: ignore[arg-type]


# ---------------------------------------------------------------- records (produced)

def _message_fields(message: ChatMessage) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": message.id,
        "channelId": message.channel_id,
        "userId": message.user_id,
        "name": message.name,
        "profileImage": message.profile_image,
        "content": message.content,
        "time": java_local_datetime(message.created_at),
    }
    if message.kind == "channel":
        fields["communityId"] = message.community_id
    return _numbered(fields, message.seq)


def _numbered(fields: dict[str, Any], seq: int | None) -> dict[str, Any]:
    if seq is not None:
        fields["seq"] = seq
    return fields


def message_record(message: ChatMessage) -> bytes:
    return encode({"type": "message", **_message_fields(message)})


def reply_record(message: ChatMessage) -> bytes:
    return encode({"type": "reply", **_message_fields(message), "parentId": message.parent_id,
                   "parentName": message.parent_name, "parentContent": message.parent_content})


def modify_record(message: ChatMessage, seq: int | None = None) -> bytes:
    edited = java_local_datetime(message.edited_at) if message.edited_at else None
    return encode(_numbered(_scoped({"type": "modify", "id": message.id, "channelId": message.channel_id,
                                     "userId": message.user_id, "content": message.content,
                                     "time": java_local_datetime(message.created_at), "editedAt": edited},
                                    message.community_id), seq))


def delete_record(channel_id: int, message_id: str, seq: int | None = None, community_id: int | None = None) -> bytes:
    return encode(_numbered(_scoped({"type": "delete", "id": message_id, "channelId": channel_id}, community_id), seq))


def typing_record(channel_id: int, name: str | None, community_id: int | None = None) -> bytes:
    return encode(_scoped({"type": "typing", "channelId": channel_id, "name": name}, community_id))


def _scoped(fields: dict[str, Any], community_id: int | None) -> dict[str, Any]:
    """A channel event's record names its community (direct ones have none)."""
    if community_id is not None:
        fields["communityId"] = community_id
    return fields


def presence_record(event: str, user_id: int, rooms: Iterable[str]) -> bytes:
    """``connect``/``disconnect`` for each ``community/{id}``/``direct/{id}`` room entry."""
    return encode({"type": event, "userId": str(user_id), "ids": list(rooms)})


def voice_state_record(event: str, community_id: int, state: str) -> bytes:
    """``before-enter``/``enter``: ``state`` is presence's occupancy JSON, pushed verbatim."""
    return encode({"type": event, "communityId": str(community_id), "state": state})


def exit_community_record(community_id: int, channel_id: str, ids: list[str],
                          type_for_exit: str = "out") -> bytes:
    return encode({"type": "exit-community", "typeForExit": type_for_exit,
                   "communityId": str(community_id), "channelId": channel_id, "ids": ids})


def exit_room_record(room_id: int, ids: list[str], type_for_exit: str = "out") -> bytes:
    return encode({"type": "exit-room", "typeForExit": type_for_exit,
                   "channelId": str(room_id), "ids": ids})


def file_push_body(message: ChatMessage) -> bytes:
    """The file-topic record of a stored file message, which is also its push body (§2.7
    FileUploadResponse).

    ``userId`` is a JSON string, ``channelId`` a JSON number, ``message`` the file's URL path,
    ``type`` the room kind (``direct``/``community``) and ``fileType`` the message's type.
    """
    return encode(_file_fields(message))


def file_record(message: ChatMessage) -> bytes:
    """The file-topic record: the push body, plus a channel's ``communityId`` (taken off again
    by the consumer, so the push stays §2.7's exactly)."""
    fields = _file_fields(message)
    if message.kind == "channel":
        fields["communityId"] = message.community_id
    return encode(fields)


def _file_fields(message: ChatMessage) -> dict[str, Any]:
    return _numbered({"id": message.id, "name": message.name, "profileImage": message.profile_image,
                      "message": message.content, "thumbnail": message.thumbnail,
                      "userId": str(message.user_id), "channelId": message.channel_id,
                      "type": "direct" if message.kind == "direct" else "community",
                      "fileType": message.type, "time": iso_local(message.created_at)}, message.seq)


def new_message_record(message: ChatMessage) -> Record:
    """The record of a stored new message: a text message, a reply or a file message."""
    key = record_key(message.channel_id)
    if message.type is None:
        return message_topic(message.kind), key, message_record(message)
    if message.type == "reply":
        return etc_topic(message.kind), key, reply_record(message)
    return TOPICS["file"], key, file_record(message)


def change_record(change: PendingChange, message: ChatMessage | None) -> Record:
    """The record of a stored edit (``message`` as edited) or delete."""
    key = record_key(change.channel_id)
    if change.action == "delete":
        return etc_topic(change.kind), key, delete_record(change.channel_id, change.message_id, change.seq,
                                                          change.community_id)
    assert message is not None
    return etc_topic(change.kind), key, modify_record(message, change.seq)


# ---------------------------------------------------------------- pushes (consumed)

def _s(value: Any) -> str | None:
    """§2.7 bodies carry every value as a JSON string; absent stays null."""
    return None if value is None else str(value)


def _message_body(record: dict[str, Any], event: str) -> dict[str, Any]:
    return {"type": event, "id": _s(record.get("id")), "userId": _s(record.get("userId")),
            "name": _s(record.get("name")), "profileImage": _s(record.get("profileImage")),
            "message": _s(record.get("content")), "time": _s(record.get("time"))}


def _message_push(record: dict[str, Any]) -> dict[str, Any]:
    return _seq_of(record, _message_body(record, "message"))


def _seq_of(record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The push with the record's ``seq`` added as its last field, where the record has one."""
    seq = record.get("seq")
    if seq is not None:
        body["seq"] = seq
    return body


def _reply_push(record: dict[str, Any]) -> dict[str, Any]:
    body = _message_body(record, "reply")
    body["parentName"] = _s(record.get("parentName"))
    body["parentContent"] = _s(record.get("parentContent"))
    return _seq_of(record, body)


def _modify_push(record: dict[str, Any]) -> dict[str, Any]:
    return _seq_of(record, {"type": "modify", "id": _s(record.get("id")), "userId": _s(record.get("userId")),
                            "message": _s(record.get("content")), "time": _s(record.get("time"))})


def _delete_push(record: dict[str, Any]) -> dict[str, Any]:
    return _seq_of(record, {"type": "delete", "id": _s(record.get("id"))})


def _typing_push(record: dict[str, Any]) -> dict[str, Any]:
    return {"type": "typing", "name": _s(record.get("name"))}


_ETC_PUSHES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "reply": _reply_push,
    "modify": _modify_push,
    "delete": _delete_push,
    "typing": _typing_push,
}


def _room_pushes(kind: RoomKind, record: dict[str, Any], body: dict[str, Any]) -> list[Push]:
    return [(room_destination(kind, int(record["channelId"])), encode(body))]


def _numbering(kind: RoomKind, record: dict[str, Any]) -> tuple[RoomKey | None, int | None,
                                                                 tuple[int, int | None] | None]:
    """The numbered room and ``seq`` of a record, and a channel record's scope."""
    seq = record.get("seq")
    scope = _channel_scope(kind, record)
    if seq is None:
        return None, None, scope
    return (kind, int(record["channelId"])), int(seq), scope


def _channel_scope(kind: RoomKind, record: dict[str, Any]) -> tuple[int, int | None] | None:
    if kind != "channel":
        return None
    community = record.get("communityId")
    return int(record["channelId"]), int(community) if community is not None else None


def _message_decoder(kind: RoomKind) -> Callable[[bytes], Decoded]:
    def decoded(value: bytes) -> Decoded:
        record = _loads(value)
        return Decoded(("message", str(record["id"])), _room_pushes(kind, record, _message_push(record)),
                       *_numbering(kind, record))
    return decoded


def _etc_identity(record: dict[str, Any]) -> tuple[str, ...] | None:
    event = record.get("type")
    if event == "reply":
        return ("message", str(record["id"]))
    if event == "modify":
        return ("modify", str(record["id"]), str(record.get("editedAt")), str(record.get("content")))
    if event == "delete":
        return ("delete", str(record["id"]))
    return None


def _etc_decoder(kind: RoomKind) -> Callable[[bytes], Decoded]:
    def decoded(value: bytes) -> Decoded:
        record = _loads(value)
        build = _ETC_PUSHES.get(record.get("type"))
        if build is None:
            raise ValueError(f"unknown etc record type {record.get('type')!r}")
        return Decoded(_etc_identity(record), _room_pushes(kind, record, build(record)), *_numbering(kind, record))
    return decoded


def _file_decoded(value: bytes) -> Decoded:
    record = _loads(value)
    kind: RoomKind = "direct" if record.get("type") == "direct" else "channel"
    numbering = _numbering(kind, record)
    if "communityId" in record:  # a channel's scope, not part of the push
        del record["communityId"]
        value = encode(record)
    # Otherwise the record is the push body: forward the producer's bytes untouched.
    return Decoded(("message", str(record["id"])), [(room_destination(kind, int(record["channelId"])), value)],
                   *numbering)


def _presence_pushes(record: dict[str, Any]) -> list[Push]:
    body = encode({"type": record["type"], "userId": _s(record.get("userId"))})
    entries = (parse_membership_entry(str(room)) for room in record.get("ids") or ())
    return [(topic(*entry), body) for entry in entries if entry is not None]


def _state_decoded(value: bytes) -> Decoded:
    return Decoded(None, _state_pushes(value))


def _state_pushes(value: bytes) -> list[Push]:
    record = _loads(value)
    event = record.get("type")
    if event in ("connect", "disconnect"):
        return _presence_pushes(record)
    if event in ("before-enter", "enter"):
        state = record["state"]
        return [(topic("community", int(record["communityId"])), state.encode())]
    if event == "exit-community":
        body = {"type": _s(record.get("typeForExit")), "communityId": _s(record.get("communityId")),
                "channelId": _s(record.get("channelId")), "ids": [str(i) for i in record.get("ids") or ()]}
        return [(topic("community", int(record["communityId"])), encode(body))]
    if event == "exit-room":
        body = {"type": _s(record.get("typeForExit")), "channelId": _s(record.get("channelId")),
                "ids": [str(i) for i in record.get("ids") or ()]}
        return [(topic("direct", int(record["channelId"])), encode(body))]
    raise ValueError(f"unknown state record type {event!r}")


_DECODERS: dict[str, Callable[[bytes], Decoded]] = {
    TOPICS["direct"]: _message_decoder("direct"),
    TOPICS["channel"]: _message_decoder("channel"),
    TOPICS["direct_etc"]: _etc_decoder("direct"),
    TOPICS["channel_etc"]: _etc_decoder("channel"),
    TOPICS["file"]: _file_decoded,
    TOPICS["state"]: _state_decoded,
}


def decode(topic: str, value: bytes) -> Decoded:
    """The identity and the ``(destination, body)`` pushes of one consumed record.

    Raises ``ValueError``/``KeyError`` on a malformed record; the consumer logs and skips it.
    """
    return _DECODERS[topic](value)


def pushes_for(topic: str, value: bytes) -> list[Push]:
    """The ``(destination, body)`` pushes one consumed record becomes (see ``decode``)."""
    return decode(topic, value).pushes
