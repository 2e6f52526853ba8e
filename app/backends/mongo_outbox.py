"""MongoDB side of the transactional outbox (``app.chat.ports.Outbox``).

New messages are marked in ``unpublished`` a round at a time before they are stored
(``mongo_marks``, written by ``mongo_messages``), and :meth:`MongoOutbox.published` settles
them once the broker acknowledged their records (a mark goes with its round's last). An edit
or a delete is a ``pendingChange`` document written before the change is made and removed once
published. Both are small collections indexed by ``pub`` (unpublished since): marking and
unmarking never touch the message collections or their indexes, which costs the embedded
MongoDB-wire server a third of what a field on the messages did (bench/FINDINGS.md).

Claiming (``claim_stale``): a sweep takes over entries nobody published for a while (the
worker that stored them crashed, or is stuck). It reads the oldest stale ids, then one
``update_many`` over those ids that still are stale moves their ``pub`` to now and sets
``pubBy`` to the claimer's token. Each document is updated atomically, so an entry is claimed
by one sweep only, and it is claimable again after the stale time if that claimer dies too.

``forget_nonces`` ends the idempotency retention of old messages (the unique index stops
covering them once ``nonce`` is gone). It reads the ids through the partial ``nonce_time``
index by hint, a batch at a time, and unsets by id: the embedded server plans neither a
partial index nor a hint for an ``update_many``, and scanned every message instead (16 s for
500,000 DM messages, longer than a call may take, so the sweep failed and began again at
every sweep while the server stayed busy: bench/FINDINGS.md, tenth session).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Sequence

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from app.backends.mongo_messages import MongoConnection
from app.backends.mongo_schema import (COLLECTIONS, NONCE_TIME_INDEX, PENDING_CHANGES, delete_unique_in,
                                       find_unique_in, from_document, update_unique_in)
from app.chat.model import CHANGE_PLACE, ChatMessage, Claimed, OutboxRef, PendingChange, stored_time
from app.destinations import RoomKind
from app.errors import BackendUnavailable
from app.logs import RateLimitedLog

__all__ = ["MongoOutbox"]

log = logging.getLogger(__name__)
_failures = RateLimitedLog(log)

# Messages whose nonce one read of the retention sweep takes: bounds each call.
NONCE_BATCH = 1000


class MongoOutbox:
    """``Outbox`` over ``unpublished`` (marks of new messages) and ``pendingChange``."""

    def __init__(self, connection: MongoConnection) -> None:
        self._messages = {kind: connection.db[name] for kind, name in COLLECTIONS.items()}
        self._marks = connection.marks
        self._changes = connection.durable(PENDING_CHANGES)

    def add_change(self, change: PendingChange) -> PendingChange:
        document = {"action": change.action, "kind": change.kind, "channelId": change.channel_id,
                    "messageId": change.message_id, "content": change.content, "editedAt": change.edited_at,
                    "seq": change.seq, "communityId": change.community_id, "pub": datetime.utcnow()}
        result = _guarded(lambda: self._changes.insert_one(document))
        return replace(change, id=str(result.inserted_id))

    def drop_change(self, change_id: str) -> None:
        _guarded(lambda: self._changes.delete_one({"_id": ObjectId(change_id)}))

    def published(self, refs: Sequence[OutboxRef]) -> None:
        changes = [ObjectId(ident) for place, ident in refs if place == CHANGE_PLACE]
        messages = [ObjectId(ident) for place, ident in refs if place != CHANGE_PLACE]
        if changes:
            _guarded(lambda: delete_unique_in(self._changes, "_id", changes))
        self._marks.settle(messages)

    def claim_stale(self, older_than: datetime, owner: str, limit: int) -> Claimed:
        messages: list[ChatMessage] = []
        marks = self._marks.claim_stale(older_than, owner, limit)
        for kind, collection in self._messages.items():
            ids = [ident for mark in marks if mark.kind == kind for ident in mark.message_ids]
            found = {doc["_id"]: doc for doc in _guarded(lambda: find_unique_in(collection, "_id", ids))}
            messages += [from_document(kind, found[ident]) for ident in ids if ident in found]
            # Never stored (their writer failed or died in between): nothing to publish.
            self._marks.settle([ident for ident in ids if ident not in found])
        changes = [_change(doc) for doc in _claim(self._changes, older_than, owner, limit)]
        return Claimed(messages=messages, changes=changes)

    def forget_nonces(self, older_than: datetime) -> int:
        forgotten = 0
        expired = {"nonce": {"$exists": True}, "localDateTime": {"$lt": older_than}}
        for collection in self._messages.values():
            while True:
                ids = [doc["_id"] for doc in _guarded(lambda: list(
                    collection.find(expired, {"_id": 1}).hint(NONCE_TIME_INDEX).limit(NONCE_BATCH)))]
                forgotten += _guarded(lambda: update_unique_in(collection, "_id", ids, {"$unset": {"nonce": ""}},
                                                               also=expired))
                if len(ids) < NONCE_BATCH:
                    break
        return forgotten


def _claim(collection: Collection[dict[str, Any]], older_than: datetime, owner: str,
           limit: int) -> list[dict[str, Any]]:
    """The oldest ``limit`` stale entries of ``collection`` that this claim won, oldest first."""
    stale = {"pub": {"$lt": older_than}}
    ids = [doc["_id"] for doc in _guarded(lambda: list(
        collection.find(stale, {"_id": 1}).sort("pub", ASCENDING).limit(limit)))]
    if not ids:
        return []
    now = stored_time(datetime.utcnow())  # what the database keeps, so the read below matches
    _guarded(lambda: collection.update_many({"_id": {"$in": ids}, **stale}, {"$set": {"pub": now, "pubBy": owner}}))
    claimed = {doc["_id"]: doc for doc in _guarded(lambda: list(collection.find({"pub": now, "pubBy": owner})))}
    return [claimed[ident] for ident in ids if ident in claimed]


def _change(doc: dict[str, Any]) -> PendingChange:
    kind: RoomKind = "direct" if doc["kind"] == "direct" else "channel"
    return PendingChange(action=doc["action"], kind=kind, channel_id=int(doc["channelId"]),
                         message_id=str(doc["messageId"]), content=doc.get("content"),
                         edited_at=doc.get("editedAt"), id=str(doc["_id"]),
                         seq=int(doc["seq"]) if doc.get("seq") is not None else None,
                         community_id=int(doc["communityId"]) if doc.get("communityId") is not None else None)


def _guarded(call: Any) -> Any:
    try:
        return call()
    except (PyMongoError, InvalidId) as exc:
        _failures.warning("mongodb outbox call failed: %s", type(exc).__name__)
        raise BackendUnavailable("database unavailable") from exc
