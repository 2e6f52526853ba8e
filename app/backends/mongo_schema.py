"""MongoDB document shapes and indexes shared by the write and read sides.

Collections and field names are those of protocol.md §4, so data written by the original
Java server stays readable: ``directMessage`` and ``channelMessage`` (``_id`` ObjectId,
``channelId``/``userId``/``communityId`` int64, ``localDateTime`` Date, ``content``, ``type``,
``name``, ``profileImage``, ``thumbnail``, ``parentId``, ``parentName``, ``parentContent``)
and ``messageTime`` (``channelId`` location key, ``read.<userId>`` Date). New fields:
``editedAt``; ``nonce`` (the client's idempotency key, unique per author while kept:
``NONCE_INDEX``); ``seq`` (the message's number in its room, ``mongo_event_log``).

Each room's event sequence (``mongo_event_log``) is two collections: ``roomSeq``, one document
per room (``_id`` ``"<kind>:<channelId>"``: ``summary_id``) holding its counter and its message
summary, and ``roomEvent``, the numbered events' records.

The outbox (``mongo_outbox``) is two small collections, so the message collections carry no
publishing state and no index for it: ``unpublished``, one mark per new message not published
to Kafka yet (``_id`` the message's id, ``kind``, ``pub`` since when, ``pubBy`` the worker that
claimed it last), and ``pendingChange``, one document per edit or delete not published yet.

Room summaries (``mongo_summaries``) are fields of the room's ``roomSeq`` document (``SUMMARIES``),
so a round of new messages numbers and counts each room in one write. One marker document
there (``SUMMARY_MARKER_ID``) says every message in the database is counted. ``ensure_indexes``
writes that marker into a database that holds no message yet; otherwise only
``mongo_summaries.rebuild`` does. Versions before 2026-12-06 kept summaries in a collection of
their own (``LEGACY_SUMMARIES``); ``ensure_indexes`` removes its marker, so a node of such a
version still running during a rolling upgrade counts from the messages instead of believing
summaries that this version no longer keeps (README, "Upgrading").

``find_unique_in``, ``delete_unique_in`` and ``update_unique_in`` are the query helpers here: a
lookup, a delete and an update by a list of unique keys, in chunks of ``IN_CHUNK``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Mapping, Sequence

from bson import ObjectId
from bson.int64 import Int64
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from app.chat.model import ChatMessage
from app.destinations import RoomKind

__all__ = ["COLLECTIONS", "READ_MARKERS", "SUMMARIES", "LEGACY_SUMMARIES", "SUMMARY_MARKER_ID", "PENDING_CHANGES", "UNPUBLISHED", "ROOM_SEQUENCES", "ROOM_EVENTS",
           "NONCE_INDEX", "NONCE_TIME_INDEX",
           "IN_CHUNK", "find_unique_in", "delete_unique_in", "update_unique_in", "summary_id", "room_of_id", "to_document", "from_document", "ensure_indexes",
           "INDEXES", "missing_indexes",
           "object_id"]

COLLECTIONS: dict[RoomKind, str] = {"direct": "directMessage", "channel": "channelMessage"}
READ_MARKERS = "messageTime"
ROOM_SEQUENCES = "roomSeq"
# A room's summary shares its counter's document: a round's one write per room does both.
SUMMARIES = ROOM_SEQUENCES
# Where summaries were kept before 2026-12-06: only its marker is still touched (removed).
LEGACY_SUMMARIES = "roomSummary"
# The marker's _id cannot collide with a room's: those are "direct:<id>" / "channel:<id>".
SUMMARY_MARKER_ID = "summaries-complete"
PENDING_CHANGES = "pendingChange"
UNPUBLISHED = "unpublished"
ROOM_EVENTS = "roomEvent"
NONCE_INDEX = "author_nonce_unique"
# The messages that still hold a nonce, by time: the retention sweep reads it (by hint).
NONCE_TIME_INDEX = "nonce_time"

_OPTIONAL_FIELDS = {
    "name": "name",
    "profile_image": "profileImage",
    "type": "type",
    "thumbnail": "thumbnail",
    "parent_id": "parentId",
    "parent_name": "parentName",
    "parent_content": "parentContent",
    "edited_at": "editedAt",
    "nonce": "nonce",
    "seq": "seq",
}


# SecantusDB (the dev/test server) checks every candidate of an ``$in`` against the listed
# values one by one in Python: n candidates x n values (100 room summaries: 11.6 ms).
# Chunks keep that near linear (6.7 ms); on MongoDB a chunk costs one more round trip.
IN_CHUNK = 32

# Indexes kept although another index has their keys as its prefix: the embedded server reads
# time ranges wrongly through the longer one (tests/integration/test_history_windows.py fails
# without channel_time; bench/FINDINGS.md, eighth session).
RANGE_INDEXES: Final = frozenset({"channel_time"})


def find_unique_in(collection: Collection[Any], field: str, values: Sequence[Any],
                   projection: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The documents whose ``field`` (unique in ``collection``) is one of ``values``."""
    docs: list[dict[str, Any]] = []
    for start in range(0, len(values), IN_CHUNK):
        chunk = list(values[start:start + IN_CHUNK])
        # The limit (no more can match) lets the first reply close the cursor: no getMore.
        docs += collection.find({field: {"$in": chunk}}, projection, limit=len(chunk))
    return docs


def delete_unique_in(collection: Collection[Any], field: str, values: Sequence[Any]) -> None:
    """Delete the documents whose ``field`` (unique in ``collection``) is one of ``values``."""
    for start in range(0, len(values), IN_CHUNK):
        collection.delete_many({field: {"$in": list(values[start:start + IN_CHUNK])}})


def update_unique_in(collection: Collection[Any], field: str, values: Sequence[Any], update: Mapping[str, Any],
                     also: Mapping[str, Any] | None = None) -> int:
    """Apply ``update`` to the documents whose ``field`` (unique in ``collection``) is one of
    ``values`` and that still match ``also``; how many it modified."""
    modified = 0
    for start in range(0, len(values), IN_CHUNK):
        chunk = {field: {"$in": list(values[start:start + IN_CHUNK])}, **(also or {})}
        modified += collection.update_many(chunk, update).modified_count
    return modified


def object_id(message_id: str) -> ObjectId | None:
    """The ObjectId for a client-sent id, or None when it is not one (never raises)."""
    return ObjectId(message_id) if isinstance(message_id, str) and ObjectId.is_valid(message_id) else None


def summary_id(kind: RoomKind, channel_id: int) -> str:
    """The ``_id`` of a room's ``roomSeq`` document (its counter and its summary)."""
    return f"{kind}:{int(channel_id)}"


def room_of_id(ident: str) -> tuple[RoomKind, int]:
    """The room a ``summary_id`` names."""
    kind, _, channel = ident.partition(":")
    room_kind: RoomKind = "direct" if kind == "direct" else "channel"
    return room_kind, int(channel)


def to_document(message: ChatMessage) -> dict[str, Any]:
    """The stored form; absent optional fields are omitted, as Spring Data did."""
    doc: dict[str, Any] = {
        "channelId": Int64(message.channel_id),
        "userId": Int64(message.user_id),
        "content": message.content,
        "localDateTime": message.created_at,
    }
    if message.kind == "channel" and message.community_id is not None:
        doc["communityId"] = Int64(message.community_id)
    for attr, key in _OPTIONAL_FIELDS.items():
        value = getattr(message, attr)
        if value is not None:
            doc[key] = value
    return doc


def from_document(kind: RoomKind, doc: dict[str, Any]) -> ChatMessage:
    extra = {attr: doc.get(key) for attr, key in _OPTIONAL_FIELDS.items()}
    community = doc.get("communityId")
    return ChatMessage(
        kind=kind,
        id=str(doc["_id"]),
        channel_id=int(doc["channelId"]),
        user_id=int(doc["userId"]),
        content=doc.get("content") or "",
        created_at=doc["localDateTime"],
        community_id=int(community) if community is not None else None,
        **extra,
    )


def _index_table() -> list[tuple[str, list[tuple[str, int]], dict[str, Any]]]:
    """Every index Smooth needs: (collection, keys, options with its ``name``)."""
    table: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = []
    for name in COLLECTIONS.values():
        table += [
            # Reads by room and a time range. channel_time_id below has these keys as its prefix and
            # serves the same reads on MongoDB, but SecantusDB (the embedded server) misses documents
            # lying exactly on a $gte bound of its middle key, so this index stays (see RANGE_INDEXES).
            (name, [("channelId", ASCENDING), ("localDateTime", DESCENDING)], {"name": "channel_time"}),
            # History pages sort by (localDateTime, _id) so ties are stable; this serves that sort.
            (name, [("channelId", ASCENDING), ("localDateTime", DESCENDING), ("_id", DESCENDING)],
             {"name": "channel_time_id"}),
            # A repeated SEND (same author, same nonce) is refused by the index itself, so the rule
            # holds across workers, nodes and restarts.
            (name, [("userId", ASCENDING), ("nonce", ASCENDING)],
             {"name": NONCE_INDEX, "unique": True, "partialFilterExpression": {"nonce": {"$exists": True}}}),
            # What the retention sweep reads: only messages that still hold a nonce.
            (name, [("localDateTime", ASCENDING)],
             {"name": NONCE_TIME_INDEX, "partialFilterExpression": {"nonce": {"$exists": True}}}),
        ]
    return table + [
        (UNPUBLISHED, [("pub", ASCENDING)], {"name": "unpublished_since"}),
        (PENDING_CHANGES, [("pub", ASCENDING)], {"name": "pending_since"}),
        # One event per number and room; replay and gap healing read a room's events by number.
        (ROOM_EVENTS, [("room", ASCENDING), ("seq", ASCENDING)], {"name": "room_seq_unique", "unique": True}),
        # The quiet-room check reads the counters last moved in a time window.
        (ROOM_SEQUENCES, [("at", ASCENDING)], {"name": "sequence_time"}),
        (READ_MARKERS, [("channelId", ASCENDING)], {"name": "location_unique", "unique": True}),
    ]


INDEXES: Final = _index_table()


def ensure_indexes(db: Database[Any]) -> None:
    """Idempotent: the history/unread indexes and the one-document-per-location rule."""
    for collection, keys, options in INDEXES:
        db[collection].create_index(keys, **options)
    _retire_legacy_summaries(db)
    _claim_empty_database(db)


def _retire_legacy_summaries(db: Database[Any]) -> None:
    """Stop older nodes believing ``LEGACY_SUMMARIES``, which this version no longer keeps: without
    its marker they count from the messages (exact, slower) until they are replaced."""
    db[LEGACY_SUMMARIES].delete_one({"_id": SUMMARY_MARKER_ID})


def missing_indexes(db: Database[Any]) -> list[str]:
    """``collection.index`` for each index of ``INDEXES`` the database lacks (``python -m app check``)."""
    present: dict[str, dict[str, Any]] = {}
    missing = []
    for collection, keys, options in INDEXES:
        if collection not in present:
            present[collection] = db[collection].index_information()
        found = present[collection].get(options["name"])
        if found is None or [tuple(key) for key in found["key"]] != [tuple(key) for key in keys]:
            missing.append(f"{collection}.{options['name']}")
    return missing


def _claim_empty_database(db: Database[Any]) -> None:
    """A database without messages is fully summarised (there is nothing to count): say so.

    Anything else keeps waiting for ``mongo_summaries.rebuild`` (messages written before
    summaries existed would otherwise be missing from them). The counts run only while the
    marker is absent: once per process start on such a database.
    """
    summaries = db[SUMMARIES]
    if summaries.find_one({"_id": SUMMARY_MARKER_ID}, {"_id": 1}) is not None:
        return
    if any(db[name].estimated_document_count() for name in COLLECTIONS.values()):
        return
    summaries.update_one({"_id": SUMMARY_MARKER_ID},
                         {"$setOnInsert": {"since": datetime.utcnow(), "by": "empty database"}}, upsert=True)
