"""Per-room message summaries: kept on every write, read instead of counting.

A room's summary is a set of fields of its ``roomSeq`` document (``mongo_schema.SUMMARIES``), the
one that also holds its event counter (``mongo_event_log``), ``_id`` =
``mongo_schema.summary_id(kind, channelId)``::

    {seq, at, grants, n, byUser: {"<userId>": count}, latest, first, gone, lastGone: [...], gen}

- ``n``: messages of the room currently stored; ``byUser.<id>``: how many of them that user
  wrote. Exact. message-count for a room the user never read is ``n - byUser.<user>``.
- ``latest``: never older than the room's newest ``localDateTime`` (equal to it, except that
  two deletes racing each other, or a message that was numbered and then not stored, can
  leave a newer time). A read mark at or after ``latest`` therefore really has nothing newer:
  that shortcut stays exact.
- ``first``: never newer than the room's oldest ``localDateTime`` (deletes do not raise
  it). Used to size history windows (``mongo_recent.Density``) and for "every message is
  newer than the mark", both of which only need that bound.

- ``gone``: how many counted messages left the room (deletes, and numbered messages taken
  back), ever; ``lastGone``: the last ``GONE_KEPT`` of them (``{s: seq or null, t: time,
  u: author}``, oldest first); ``gen``: raised by each rebuild that rewrites the summary.
  These make an unread count after a read mark a subtraction (``ReadPosition``).

**Unread after a mark without counting.** A read mark set about now (``mark_read``, when a
user enters or leaves a room) also records the room's position: its ``n``, the user's
``byUser``, ``gone``, ``gen`` and ``seq`` as they were. Later, the others' messages after the
mark are ``(n - n_then) - (own - own_then)``, plus the others' messages that were already
there at the mark and have gone since (from ``lastGone``; a message is "already there" when
its number is at most the ``seq`` then, or, unnumbered, when its time is at most the mark's).
A message counts as after the mark when it was numbered after it: a message written a few
milliseconds before the mark but stored after it (in flight) is unread. The position is not
used (the count reads the messages after the mark, as before) when it does not describe the
mark: the room held a message newer than the mark when it was set, the mark was not about
now, a rebuild rewrote the summary since, more than ``GONE_KEPT`` messages went since, or a
writer that keeps no positions (an older version) moved the mark.

**Who counts what, when.** A new message sent through the group commit is counted in the
same write that numbers it (``counting``, merged into ``mongo_event_log``'s counter update):
one update per room per round does both, where two did before (bench/FINDINGS.md, tenth
session). A numbered message that was then surely not stored (a repeated nonce, a refused
document) is taken back (``uncounted``). ``RoomSummaries`` keeps the rest: ``added`` counts
messages stored without a number (``MessageWriter.insert``, for seeding and repairs, and
``insert_many`` of unnumbered messages), ``removed`` counts a delete out; each is one atomic
update per room. Edits change nothing counted.

**Writes, no transaction.** Counting and storing are separate writes. A process that dies
between numbering a round and storing it, or a store whose outcome stays unknown (the
database went away mid-write and could not be asked), leaves those rooms' ``n`` too high by
the messages not stored; a take-back or a delete's update that fails leaves it off by one (it
is logged, never raised: the message's outcome is what its sender must hear). An unread
count there can then be one off until the summary is rebuilt. ``rebuild`` (the operator's
command: ``python -m app.backends.rebuild_summaries``) recomputes every summary from the
messages. Run it after a crash of a chat server, and once after upgrading from a version
that kept summaries elsewhere or had none.

**When summaries are believed.** The marker document ``SUMMARY_MARKER_ID`` says every
stored message is counted. ``mongo_schema.ensure_indexes`` writes it into a database that
holds no message yet; otherwise only ``rebuild`` writes it (and deletes it while it runs).
Without it, ``load`` returns None and readers count from the messages as before: a
database upgraded from before summaries stays exact (and slow) until its first rebuild.
With it, a room without a summary has never been written through ``RoomSummaries``: the
reader checks for messages there and counts any it finds (and logs that a rebuild is
due) rather than answering from nothing. Such a room is not rebuilt on the fly: without a
transaction, a writer's update racing that rebuild would count a message twice or not at
all, and that error would then look like a valid summary.

``rebuild`` while chat servers write: a message written during the rebuild can be counted
twice or missed in its room (the recount and the writer's ``$inc`` race). Run it with the
writers stopped, or run it again when they are quiet. It sets the summary fields only: the
counters sharing the documents are never touched.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

from bson.int64 import Int64
from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from app.backends.mongo_recent import Density, newest_documents
from app.backends.mongo_schema import (COLLECTIONS, SUMMARIES, SUMMARY_MARKER_ID, find_unique_in, room_of_id,
                                       summary_id)
from app.chat.model import ChatMessage
from app.destinations import RoomKind

__all__ = ["RoomSummary", "RoomSummaries", "ReadPosition", "Gone", "counting", "messages_by_room", "rebuild", "REBUILD_COMMAND",
           "GONE_KEPT", "MARK_FRESH_S"]

log = logging.getLogger(__name__)

REBUILD_COMMAND = "python -m app.backends.rebuild_summaries"
REBUILD_BATCH = 1000
DUPLICATE_KEY = 11000
# Removed messages remembered per room: more removals since a read mark than this, and that
# mark's unread count reads the messages again.
GONE_KEPT = 32
# A read mark within this many seconds of the server's clock is "about now": only such a mark
# gets a position (a mark in the past would count messages stored later but written before it).
MARK_FRESH_S = 10.0
_DENSITY_FIELDS = {"n": 1, "first": 1, "latest": 1}
# What a summary read returns: not ``lastGone``, which only an unread count after removals since
# a read position needs (``with_removals``), and which costs the embedded server more to copy out
# than all the rest (32 rooms: 4.8 ms without it, 10-12 ms with it; bench/FINDINGS.md, eleventh session).
_SUMMARY_FIELDS = {"n": 1, "byUser": 1, "latest": 1, "first": 1, "gone": 1, "gen": 1, "seq": 1}
_REMOVAL_FIELDS = {"lastGone": 1}


@dataclass(frozen=True, slots=True)
class Gone:
    """A counted message that left its room: its number (None: stored unnumbered), time, author."""

    seq: int | None
    at: datetime
    author: int


@dataclass(frozen=True, slots=True)
class ReadPosition:
    """Where a room stood when a user's read mark was set (see the module docstring)."""

    at: datetime
    messages: int
    own: int
    gone: int
    generation: int
    seq: int

    def document(self) -> dict[str, Any]:
        return {"at": self.at, "n": Int64(self.messages), "own": Int64(self.own), "gone": Int64(self.gone),
                "gen": Int64(self.generation), "seq": Int64(self.seq)}

    @classmethod
    def from_document(cls, doc: Any) -> "ReadPosition | None":
        """The position a mark document holds; None for anything else (absent, or malformed)."""
        try:
            return cls(at=doc["at"], messages=int(doc["n"]), own=int(doc["own"]), gone=int(doc["gone"]),
                       generation=int(doc["gen"]), seq=int(doc["seq"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RoomSummary:
    """One room's summary, as read from its ``roomSeq`` document."""

    messages: int
    by_user: Mapping[int, int] = field(default_factory=dict)
    latest: datetime | None = None
    first: datetime | None = None
    gone: int = 0
    last_gone: tuple[Gone, ...] = ()
    generation: int = 0
    seq: int = 0

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "RoomSummary":
        by_user = {int(user): int(n) for user, n in (doc.get("byUser") or {}).items()}
        return cls(messages=int(doc.get("n") or 0), by_user=by_user, latest=doc.get("latest"),
                   first=doc.get("first"), gone=int(doc.get("gone") or 0), last_gone=removals_of(doc),
                   generation=int(doc.get("gen") or 0), seq=int(doc.get("seq") or 0))

    def needs_removals(self, position: ReadPosition) -> bool:
        """Whether ``unread_since(position)`` needs the last removals, which ``load`` does not
        read: messages went since the position was recorded, and the summary was read without them."""
        return self.gone > position.gone and not self.last_gone

    def written_by(self, user_id: int) -> int:
        return self.by_user.get(int(user_id), 0)

    def position(self, user_id: int, at: datetime) -> ReadPosition | None:
        """This summary as a read mark at ``at`` records it; None when the room holds a message
        newer than the mark (then the position would not describe the mark)."""
        if self.latest is not None and self.latest > at:
            return None
        return ReadPosition(at=at, messages=self.messages, own=self.written_by(user_id), gone=self.gone,
                            generation=self.generation, seq=self.seq)

    def unread_since(self, position: ReadPosition, user_id: int) -> int | None:
        """Others' messages after the mark ``position`` was recorded with; None when it cannot
        say (rewritten by a rebuild, too many removals since, or an impossible answer)."""
        removed_since = self.gone - position.gone
        if position.generation != self.generation or not 0 <= removed_since <= len(self.last_gone):
            return None
        returned = sum(1 for gone in self.last_gone[len(self.last_gone) - removed_since:]
                       if gone.author != int(user_id) and _there_at(gone, position))
        unread = (self.messages - position.messages) - (self.written_by(user_id) - position.own) + returned
        return unread if 0 <= unread <= self.messages - self.written_by(user_id) else None

    def density(self) -> Density | None:
        if self.latest is None or self.first is None:
            return None
        return Density(messages=self.messages, first=self.first, latest=self.latest)


def removals_of(doc: Mapping[str, Any]) -> tuple[Gone, ...]:
    """A room document's ``lastGone``, oldest first (empty when it was not read)."""
    return tuple(Gone(None if g.get("s") is None else int(g["s"]), g["t"], int(g["u"]))
                 for g in doc.get("lastGone") or ())


class RoomSummaries:
    """Keeps and reads the rooms' summaries; one instance per database."""

    def __init__(self, db: Database[Any]) -> None:
        self._db = db
        self._summaries = db[SUMMARIES]

    # -- write side ----------------------------------------------------------------------

    def added(self, messages: Sequence[ChatMessage]) -> None:
        """Count stored messages in: one update per room, all in one unordered bulk write."""
        if not messages:
            return
        rooms = messages_by_room(messages)
        updates = [UpdateOne({"_id": summary_id(kind, room)}, counting(batch), upsert=True)
                   for (kind, room), batch in rooms.items()]
        self._quietly(lambda: self._upsert(updates), rooms=[summary_id(kind, room) for kind, room in rooms])

    def uncounted(self, messages: Sequence[ChatMessage]) -> None:
        """Take back messages counted when they were numbered and then not stored (best effort).

        ``latest`` and ``first`` stay as they are: bounds that are still true."""
        if not messages:
            return
        rooms = messages_by_room(messages)
        updates = [UpdateOne({"_id": summary_id(kind, room), "n": {"$exists": True}},
                             _going([(m.seq, m.created_at, int(m.user_id)) for m in batch]))
                   for (kind, room), batch in rooms.items()]
        self._quietly(lambda: self._summaries.bulk_write(updates, ordered=False),
                      rooms=[summary_id(kind, room) for kind, room in rooms])

    def _upsert(self, updates: list[UpdateOne]) -> None:
        """One unordered bulk write; updates that lost a race to create the same new summary
        (duplicate key) are sent again, and then find the summary to update. MongoDB 4.2+
        retries such an ``_id`` upsert itself and SecantusDB serialises writes, so this is for
        older servers (no test here can produce the race)."""
        try:
            self._summaries.bulk_write(updates, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", ())
            if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            self._summaries.bulk_write([updates[error["index"]] for error in errors], ordered=False)

    def removed(self, kind: RoomKind, document: Mapping[str, Any]) -> None:
        """Count a deleted message out; if it was the newest, move ``latest`` to the new newest."""
        room, at = int(document["channelId"]), document["localDateTime"]
        key = summary_id(kind, room)
        update = _going([(document.get("seq"), at, int(document["userId"]))])
        # No upsert, and only where there is a summary: a room without one (its counter's
        # document may exist) stays without one (a summary made of this decrement alone would
        # claim n = -1 and be believed).
        # update_one + find_one, not findAndModify: the embedded server scans the whole
        # collection for that (mongo_event_log says how much).
        counted_out = self._quietly(lambda: self._summaries.update_one({"_id": key, "n": {"$exists": True}}, update),
                                    rooms=[key])
        after = None
        if counted_out is not None and counted_out.matched_count:
            after = self._quietly(lambda: self._summaries.find_one({"_id": key}, {"latest": 1, "n": 1, "first": 1}),
                                  rooms=[key])
        if after is not None and after.get("latest") is not None and at >= after["latest"]:
            self._quietly(lambda: self._lower_latest(kind, room, at, after), rooms=[key])

    def _lower_latest(self, kind: RoomKind, room: int, removed_at: datetime, summary: Mapping[str, Any]) -> None:
        """Set ``latest`` to the newest remaining time, never below the truth.

        Only lowered while it still holds the removed time (a concurrent insert's ``$max``
        wins). An insert whose ``$max`` ran before this ``$set`` overwrote it is stored by
        then, so the second look below finds it and raises ``latest`` again.
        """
        key = summary_id(kind, room)
        newest = self._newest_time(kind, room, summary)
        change = {"$set": {"latest": newest}} if newest is not None else {"$unset": {"latest": ""}}
        self._summaries.update_one({"_id": key, "latest": removed_at}, change)
        again = self._newest_time(kind, room, summary)
        if again is not None and (newest is None or again > newest):
            self._summaries.update_one({"_id": key}, {"$max": {"latest": again}})

    def _newest_time(self, kind: RoomKind, room: int, summary: Mapping[str, Any]) -> datetime | None:
        density = RoomSummary.from_document(summary).density()
        docs = newest_documents(self._db[COLLECTIONS[kind]], room, 1, density=density,
                                projection={"localDateTime": 1})
        return docs[0]["localDateTime"] if docs else None

    def _quietly(self, call: Any, *, rooms: Iterable[str]) -> Any:
        """Summary updates follow a stored message: a failure is logged, never raised."""
        try:
            return call()
        except PyMongoError as exc:
            log.error("room summary not updated (%s) for %s: counts there are off until `%s` runs",
                      type(exc).__name__, ", ".join(rooms), REBUILD_COMMAND)
            return None

    # -- read side -----------------------------------------------------------------------

    def load(self, kind: RoomKind, rooms: Sequence[int]) -> dict[int, RoomSummary] | None:
        """The summaries of ``rooms`` that exist (one lookup per ``IN_CHUNK`` rooms); None while
        they are not believed (no marker: messages may predate the summaries)."""
        wanted = [SUMMARY_MARKER_ID, *(summary_id(kind, room) for room in rooms)]
        docs = find_unique_in(self._summaries, "_id", wanted, _SUMMARY_FIELDS)
        if not any(doc["_id"] == SUMMARY_MARKER_ID for doc in docs):
            return None
        return {room_of_id(doc["_id"])[1]: RoomSummary.from_document(doc) for doc in docs
                if doc["_id"] != SUMMARY_MARKER_ID}

    def with_removals(self, kind: RoomKind, summaries: Mapping[int, RoomSummary]) -> dict[int, RoomSummary]:
        """``summaries`` (as ``load`` read them) with their last removals (``last_gone``): one
        lookup per ``IN_CHUNK`` rooms."""
        wanted = [summary_id(kind, room) for room in summaries]
        docs = find_unique_in(self._summaries, "_id", wanted, _REMOVAL_FIELDS)
        removals = {room_of_id(doc["_id"])[1]: removals_of(doc) for doc in docs}
        return {room: replace(summary, last_gone=removals.get(room, ())) for room, summary in summaries.items()}

    def one(self, kind: RoomKind, room: int) -> RoomSummary | None:
        """One room's summary as it is now (believed or not); None when it has none."""
        doc = self._summaries.find_one({"_id": summary_id(kind, room), "n": {"$exists": True}}, _SUMMARY_FIELDS)
        return RoomSummary.from_document(doc) if doc is not None else None

    def density(self, kind: RoomKind, room: int) -> Density | None:
        """What sizes a room's history windows, whether or not summaries are believed (it is
        an estimate). Read without ``byUser``, which for a channel can hold thousands of
        authors. None when the room has no summary or it has no times."""
        doc = self._summaries.find_one({"_id": summary_id(kind, room)}, _DENSITY_FIELDS)
        return RoomSummary.from_document(doc).density() if doc is not None else None


def messages_by_room(messages: Iterable[ChatMessage]) -> dict[tuple[RoomKind, int], list[ChatMessage]]:
    """The messages grouped by room (kind, channel id), each group in the given order."""
    rooms: dict[tuple[RoomKind, int], list[ChatMessage]] = defaultdict(list)
    for message in messages:
        rooms[(message.kind, int(message.channel_id))].append(message)
    return rooms


def counting(batch: Sequence[ChatMessage]) -> dict[str, Any]:
    """The update that counts one room's new messages into its summary (``$inc``, ``$max``,
    ``$min``): ``mongo_event_log`` merges it into the update that numbers them."""
    times = [message.created_at for message in batch]
    return {"$inc": _tally(batch), "$max": {"latest": max(times)}, "$min": {"first": min(times)}}


def _going(leaving: Sequence[tuple[Any, datetime, int]]) -> dict[str, Any]:
    """The update that counts messages ``(seq or None, time, author)`` out of their room."""
    counts: dict[str, int] = {"n": -len(leaving), "gone": len(leaving)}
    for _, _, author in leaving:
        counts[f"byUser.{author}"] = counts.get(f"byUser.{author}", 0) - 1
    records = [{"s": None if seq is None else Int64(seq), "t": at, "u": Int64(author)} for seq, at, author in leaving]
    return {"$inc": {key: Int64(n) for key, n in counts.items()},
            "$push": {"lastGone": {"$each": records, "$slice": -GONE_KEPT}}}


def _there_at(gone: Gone, position: ReadPosition) -> bool:
    """Whether a message that went was in the room when ``position`` was recorded."""
    return gone.seq <= position.seq if gone.seq is not None else gone.at <= position.at


def _tally(batch: Sequence[ChatMessage]) -> dict[str, Int64]:
    counts: dict[str, int] = {"n": len(batch)}
    for message in batch:
        key = f"byUser.{int(message.user_id)}"
        counts[key] = counts.get(key, 0) + 1
    return {key: Int64(n) for key, n in counts.items()}


# -- rebuild -----------------------------------------------------------------------------


def rebuild(db: Database[Any], *, batch: int = REBUILD_BATCH,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Recompute every room's summary from its messages (one aggregate per collection).

    The marker is removed first (readers count from the messages meanwhile) and written
    again at the end. Rooms whose summary was already right are not rewritten; summaries of
    rooms without messages become empty ones. Returns per kind: rooms with messages,
    messages, summaries rewritten (``changed``: drift found), and the time taken. ``progress``
    is told each step as a line of text (the operator's command prints them).
    """
    say = progress or (lambda line: None)
    started = datetime.utcnow()
    summaries = db[SUMMARIES]
    summaries.delete_one({"_id": SUMMARY_MARKER_ID})
    report: dict[str, Any] = {}
    for kind, collection in COLLECTIONS.items():
        report[kind] = _rebuild_kind(db, kind, db[collection], batch, say)
    summaries.replace_one({"_id": SUMMARY_MARKER_ID}, {"since": started, "by": "rebuild"}, upsert=True)
    report["seconds"] = round((datetime.utcnow() - started).total_seconds(), 2)
    return report


def _rebuild_kind(db: Database[Any], kind: RoomKind, messages: Any, batch: int,
                  say: Callable[[str], None]) -> dict[str, int]:
    say(f"{kind}: counting the messages of {messages.name} per room (one aggregate)")
    counted = _recount(kind, messages)
    # The room documents of this kind: their ids are "<kind>:<channelId>", and ";" follows ":".
    of_kind = {"_id": {"$gte": f"{kind}:", "$lt": f"{kind};"}}
    existing = {doc["_id"]: doc for doc in db[SUMMARIES].find(of_kind, _SUMMARY_FIELDS) if "n" in doc}
    wanted = dict(counted)
    for key in existing:
        wanted.setdefault(key, _summary_fields({}, None, None))
    stale = [UpdateOne({"_id": key}, _setting(fields), upsert=True) for key, fields in wanted.items()
             if key not in existing or _comparable(existing[key]) != _comparable(fields)]
    say(f"{kind}: {len(counted)} rooms with messages, {len(stale)} summaries to rewrite")
    for start in range(0, len(stale), batch):
        db[SUMMARIES].bulk_write(stale[start:start + batch], ordered=False)
        say(f"{kind}: rewrote {min(start + batch, len(stale))}/{len(stale)} summaries")
    return {"rooms": len(counted), "messages": sum(int(doc["n"]) for doc in counted.values()),
            "changed": len(stale)}


def _recount(kind: RoomKind, messages: Any) -> dict[str, dict[str, Any]]:
    """Every room's summary fields, from one ``$group`` by (room, author)."""
    pipeline = [{"$group": {"_id": {"room": "$channelId", "user": "$userId"}, "n": {"$sum": 1},
                            "latest": {"$max": "$localDateTime"}, "first": {"$min": "$localDateTime"}}}]
    rooms: dict[int, dict[str, Any]] = {}
    for row in messages.aggregate(pipeline, allowDiskUse=True):
        room = rooms.setdefault(int(row["_id"]["room"]), {"byUser": {}, "latest": None, "first": None})
        room["byUser"][str(int(row["_id"]["user"]))] = int(row["n"])
        room["latest"] = _later(room["latest"], row["latest"])
        room["first"] = _earlier(room["first"], row["first"])
    return {summary_id(kind, room): _summary_fields(parts["byUser"], parts["latest"], parts["first"])
            for room, parts in rooms.items()}


def _summary_fields(by_user: Mapping[str, int], latest: datetime | None,
                    first: datetime | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"n": Int64(sum(by_user.values())),
                              "byUser": {user: Int64(n) for user, n in by_user.items()}}
    if latest is not None:
        fields["latest"] = latest
    if first is not None:
        fields["first"] = first
    return fields


def _setting(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The update that makes a room's summary ``fields``, leaving its counter alone; a new
    generation, so read positions recorded against the old figures are not used."""
    absent = {name: "" for name in ("latest", "first") if name not in fields}
    return {"$set": dict(fields), "$inc": {"gen": Int64(1)}, **({"$unset": absent} if absent else {})}


def _comparable(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a summary says, ignoring users whose count went back to zero."""
    by_user = {user: int(n) for user, n in (doc.get("byUser") or {}).items() if int(n) != 0}
    return int(doc.get("n") or 0), by_user, doc.get("latest"), doc.get("first")


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b < a) else a
