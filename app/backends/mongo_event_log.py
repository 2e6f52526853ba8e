"""MongoDB side of the rooms' event sequences (``app.chat.ports.EventLog``).

Two collections:

- ``roomSeq``: one document per room, ``_id`` ``"<kind>:<channelId>"`` (``summary_id``): its
  counter, and beside it the room's message summary (``mongo_summaries``)::

      {seq: <highest number handed out>, at: <when>, grants: [{t: <token>, k: <count>}, ...],
       n, byUser, latest, first}

- ``roomEvent``: the log, one document per event, unique on (``room``, ``seq``)::

      {_id: <ObjectId stamped with at>, room: "<kind>:<channelId>", seq, topic, value: <record bytes>, at}

  The ``_id`` carries the event's time (to the second), so pruning old events reads the
  ``_id`` index: no index on ``at``, which cost each event 170 us of the embedded server's CPU
  (bench/db_micro.py).

**The general path: a whole round in two calls**, however many rooms it holds: every room's ``$inc``
in one unordered bulk write, each also pushing ``{t: token, k: count}`` onto the counter's
``grants`` (the last ``GRANTS_KEPT``), and then the counters read back in one query. The
update is atomic per document, so ``grants`` lists the increments in the order they were
applied: this round's block ends where the increments after it (those listed after its
token) begin. A round whose grant has already scrolled out of ``grants`` (more than
``GRANTS_KEPT`` other rounds hit the room between the write and the read) takes another
block the same way, room by room; the first block's numbers then stay unused.

**A round of one room whose counter this process knows takes one call**: an update of the
counter *only if it still holds the known value* (a compare-and-set on ``seq``), so the block
is known without reading the counter back. The known value is the counter after this
process's last allocation in the room (its own block's end, or what the read-back showed),
raised by ``expect`` to the numbers this process saw consumed from Kafka. When another worker
or node numbered the room since, the update matches nothing and the round takes the two-call
path (three calls in all). Rounds of several rooms always take the two-call path: their
bulk write reports only how many rooms matched, not which.

No ``findAndModify``, though it would return the new value in one call: the embedded server
scans the whole collection for it (9.5 ms with 1,000 rooms, 145 ms with 10,000, 572 ms with
50,000; an update by ``_id`` takes under a millisecond at any size), and a quiet server's
rounds, each of one room, paid that scan every time (bench/FINDINGS.md, tenth session).

**Numbering counts.** The new messages among a round's events are counted into their rooms'
summaries by the very update that numbers them (``mongo_summaries.counting``), so a round
writes each room's document once; ``uncount`` takes back those then not stored.

Writes wait for the configured write concern: a counter that went back after a crash of the
database would hand a number out twice.
"""

from __future__ import annotations

import calendar
import logging
import secrets
import struct
from datetime import datetime
from typing import Any, Mapping, Sequence

from bson import Binary, ObjectId
from bson.int64 import Int64
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

import app.metrics as metrics
from app.backends.mongo_messages import MongoConnection
from app.backends.mongo_schema import ROOM_EVENTS, ROOM_SEQUENCES, find_unique_in, room_of_id, summary_id
from app.backends.mongo_summaries import RoomSummaries, counting, messages_by_room
from app.chat.model import ChatMessage, Latest, RoomEvent, RoomKey
from app.errors import BackendUnavailable

__all__ = ["MongoEventLog", "GRANTS_KEPT", "first_of_block"]

log = logging.getLogger(__name__)

# Increments remembered per counter: how many other rounds may hit a room between one
# round's write and its read before that round must take a second block.
GRANTS_KEPT = 64
DUPLICATE_KEY = 11000
# What a numbering call reads back of a room's document: not its summary.
_COUNTER_FIELDS = {"seq": 1, "grants": 1}
# Rooms whose counter value this process remembers (the most recently numbered): bounds the
# memory of the one-call path; a room forgotten takes the two-call path once.
KNOWN_COUNTERS = 16_384


def first_of_block(counter: Mapping[str, Any], token: str) -> int | None:
    """The first number of the block ``token`` was granted, from its counter as read; None if
    the grant is no longer listed."""
    later = 0
    for grant in reversed(counter.get("grants") or ()):
        if grant.get("t") == token:
            return int(counter["seq"]) - later - int(grant["k"]) + 1
        later += int(grant["k"])
    return None


class MongoEventLog:
    """``EventLog`` over ``roomSeq`` and ``roomEvent``."""

    def __init__(self, connection: MongoConnection) -> None:
        self._connection = connection
        self._counters = connection.durable(ROOM_SEQUENCES)
        self._events = connection.durable(ROOM_EVENTS)
        self._summaries = RoomSummaries(connection.db)
        self._known: dict[str, int] = {}  # counter _id -> its value as this process last knew it

    def allocate(self, counts: Mapping[RoomKey, int], messages: Sequence[ChatMessage] = ()) -> dict[RoomKey, int]:
        if not counts:
            return {}
        self._connection.ensure_indexes_before_write()
        now = datetime.utcnow()
        new = messages_by_room(messages)
        path = metrics.NUMBERING_READ_BACK
        if len(counts) == 1:
            [(room, count)] = counts.items()
            ident = summary_id(*room)
            known = self._known.get(ident)
            if known is not None:
                first = self._allocate_after(ident, known, count, now, new.get(room, ()))
                if first is not None:
                    metrics.numbering_round(metrics.NUMBERING_ONE_CALL)
                    return {room: first}
                path = metrics.NUMBERING_MISSED
        metrics.numbering_round(path)
        token = secrets.token_hex(8)
        ids = {summary_id(*room): room for room in counts}
        updates = [UpdateOne({"_id": ident}, _grant(counts[room], token, now, new.get(room, ())), upsert=True)
                   for ident, room in ids.items()]
        _guarded(lambda: self._counters.bulk_write(updates, ordered=False))
        counters = _guarded(lambda: find_unique_in(self._counters, "_id", list(ids), _COUNTER_FIELDS))
        firsts: dict[RoomKey, int] = {}
        for counter in counters:
            self._remember(counter["_id"], int(counter["seq"]))
            first = first_of_block(counter, token)
            if first is not None:
                firsts[ids[counter["_id"]]] = first
        for ident, room in ids.items():
            if room not in firsts:
                log.info("room %s: a sequence grant scrolled away; taking another block", ident)
                firsts[room] = self._allocate_one(ident, counts[room], now)  # counted already
        return firsts

    def _allocate_after(self, ident: str, known: int, count: int, now: datetime,
                        new: Sequence[ChatMessage]) -> int | None:
        """The first of ``count`` numbers taken in one call if counter ``ident`` still holds
        ``known``; None (nothing taken or counted) if it does not."""
        # Every increment lists its grant, as on the two-call path: other rounds' read-backs
        # find their own block by the grants listed after theirs.
        update = _grant(count, secrets.token_hex(8), now, new)
        if _guarded(lambda: self._counters.update_one({"_id": ident, "seq": known}, update)).matched_count != 1:
            self._known.pop(ident, None)
            return None
        self._remember(ident, known + count)
        return known + 1

    def expect(self, room: RoomKey, seq: int) -> None:
        """Number ``seq`` of ``room`` was handed out (this process saw its event): the counter
        is at least there, so the room's next one-room round can expect it."""
        ident = summary_id(*room)
        if seq > self._known.get(ident, 0):
            self._remember(ident, seq)

    def _remember(self, ident: str, seq: int) -> None:
        self._known.pop(ident, None)  # re-inserted last: the dict's order is the eviction order
        self._known[ident] = seq
        if len(self._known) > KNOWN_COUNTERS:
            del self._known[next(iter(self._known))]

    def _allocate_one(self, ident: str, count: int, now: datetime) -> int:
        """Another block for one room whose grant scrolled away (its messages are counted)."""
        while True:
            token = secrets.token_hex(8)
            _guarded(lambda: self._counters.update_one({"_id": ident}, _grant(count, token, now), upsert=True))
            counter = _guarded(lambda: self._counters.find_one({"_id": ident}, _COUNTER_FIELDS)) or {}
            first = first_of_block(counter, token)
            if first is not None:
                self._remember(ident, int(counter["seq"]))
                return first

    def uncount(self, messages: Sequence[ChatMessage]) -> None:
        self._summaries.uncounted(messages)

    def append(self, entries: Sequence[RoomEvent]) -> None:
        if not entries:
            return
        self._connection.ensure_indexes_before_write()
        documents = [{"_id": _id_stamped(entry.at), "room": summary_id(*entry.room), "seq": Int64(entry.seq),
                      "topic": entry.topic, "value": Binary(entry.value), "at": entry.at} for entry in entries]
        try:
            self._events.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", ()) if e.get("code") != DUPLICATE_KEY]
            if others:
                log.warning("mongodb refused %d room events: code %s", len(others), others[0].get("code"))
                raise BackendUnavailable("database unavailable") from exc
        except PyMongoError as exc:
            log.warning("mongodb call failed: %s", type(exc).__name__)
            raise BackendUnavailable("database unavailable") from exc

    def after(self, room: RoomKey, seq: int, limit: int) -> list[RoomEvent]:
        # A range of numbers rather than sort + limit: the server need not sort (the embedded
        # one sorted in Python: a sixth of a 1,000-event replay's cost), and the numbers are
        # few enough to sort here.
        docs = _guarded(lambda: list(self._events.find(
            {"room": summary_id(*room), "seq": {"$gt": seq, "$lte": seq + limit}},
            {"_id": 0, "seq": 1, "topic": 1, "value": 1, "at": 1})))
        events = [RoomEvent(room, int(doc["seq"]), doc["topic"], bytes(doc["value"]), doc["at"]) for doc in docs]
        events.sort(key=_number)
        return events

    def latest(self, room: RoomKey) -> Latest:
        # A room's document can hold a summary and no counter yet (messages stored unnumbered).
        counter = _guarded(lambda: self._counters.find_one({"_id": summary_id(*room)}, {"seq": 1, "at": 1})) or {}
        return Latest(int(counter.get("seq", 0)), counter.get("at"))

    def went_quiet(self, since: datetime, until: datetime) -> dict[RoomKey, int]:
        docs = _guarded(lambda: list(self._counters.find({"at": {"$gte": since, "$lt": until}}, {"seq": 1})))
        return {room_of_id(doc["_id"]): int(doc["seq"]) for doc in docs}

    def prune(self, older_than: datetime) -> int:
        before = ObjectId.from_datetime(older_than)  # the earliest id of older_than's second
        return _guarded(lambda: self._events.delete_many({"_id": {"$lt": before}})).deleted_count


def _id_stamped(at: datetime) -> ObjectId:
    """A unique id whose time is ``at`` (naive UTC): a fresh id's own 8 bytes after it."""
    return ObjectId(struct.pack(">I", calendar.timegm(at.utctimetuple())) + ObjectId().binary[4:])


def _number(event: RoomEvent) -> int:
    return event.seq


def _grant(count: int, token: str, now: datetime, new: Sequence[ChatMessage] = ()) -> dict[str, Any]:
    """The update that hands out ``count`` numbers, counting the ``new`` messages among them."""
    update: dict[str, Any] = {"$inc": {"seq": count}, "$set": {"at": now},
                              "$push": {"grants": {"$each": [{"t": token, "k": count}], "$slice": -GRANTS_KEPT}}}
    if new:
        counted = counting(new)
        update["$inc"].update(counted.pop("$inc"))
        update.update(counted)
    return update


def _guarded(call: Any) -> Any:
    try:
        return call()
    except PyMongoError as exc:
        log.warning("mongodb event log call failed: %s", type(exc).__name__)
        raise BackendUnavailable("database unavailable") from exc
