"""The newest messages of one room, read in bounded ``localDateTime`` windows.

``newest_documents`` answers "the first ``count`` documents of room R in (``localDateTime``
desc, ``_id`` desc) order, optionally only those before a cursor message" with the same
result as ``find({channelId: R}).sort(newest first).limit(count)``, but as a few queries
over bounded time slices instead of one over the whole room.

Why: SecantusDB (the dev/test server) has no limit push-down. A ``find`` or aggregate
fetches and decodes every document of its index range before it sorts and limits, so the
unbounded query costs the whole room (5,000 documents: ~200 ms) for a page of 50. A slice
``{channelId: R, localDateTime: {$gte: lo, $lt: hi}}`` decodes only what lies in it. On
MongoDB every slice is an index seek of ``channel_time_id`` with the limit pushed down.

Why the result is identical (whatever the estimate): slices are disjoint time intervals
read newest first, the newer one including its lower bound (``$gte``) and the older one
excluding it (``$lt``), so every document at one millisecond lands in one slice, and all
documents of a slice sort before all documents of any older slice. Each slice is sorted
(time desc, ``_id`` desc) and limited to what is still missing, so the concatenation is
the prefix of the room's full order. When the bounded slices have not found ``count``
documents, the last query is unbounded below (``localDateTime < hi``): the plain
query for the rest. A wrong estimate costs time, never a different answer.

The estimate: ``Density`` (messages stored, oldest and newest time, from the room's
summary) gives the room's average rate; the first window is sized to hold the missing
documents at that rate with ``SLACK`` to spare. If it falls short, the next window is
sized from the density actually seen so far (or ``GROWTH`` times wider when nothing was
seen), for at most ``MAX_WINDOWS`` bounded slices before the unbounded one. Bursty rooms
cost more queries or wider slices, not other results (tests compare against the unbounded
query on skewed data). Without a usable density (no summary, fewer than two messages, all
at one millisecond) the unbounded query runs at once.

``DensityCache`` keeps the densities of rooms read recently, per process, so a room read
again soon (the next page, another member opening the same channel) skips its summary
read. A cached density can only be stale, and a stale one costs time, never results: each
read moves its ``latest`` up to the newest message it returned, and an entry is dropped
``DENSITY_TTL_S`` after it was read from the summary.

``nth_newest_position`` finds where a later page starts (the time and id of the n-th newest
message) with the same windows and only those two fields; past ``MAX_WINDOWED_SKIP`` with
the server's own skip instead, so a far page never hands every skipped position over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Collection, Hashable, Mapping

from bson import ObjectId
from bson.int64 import Int64
from pymongo import DESCENDING

__all__ = ["Density", "DensityCache", "room_filter", "newest_documents", "nth_newest_position", "unsorted_cap", "NEWEST_FIRST",
           "SLACK", "GROWTH", "MAX_WINDOWS", "MAX_WINDOWED_SKIP"]

NEWEST_FIRST = [("localDateTime", DESCENDING), ("_id", DESCENDING)]
# A window holds this many times the documents still missing at the estimated rate: a
# second round trip costs more than decoding a quarter more documents.
SLACK = 1.25
# How much wider the next window is when the previous ones held nothing at all.
GROWTH = 4.0
# Bounded slices tried before the rest is read in one unbounded query.
MAX_WINDOWS = 4
# A window's documents are sorted here: SecantusDB sorts in Python at ~13 us per document
# (~0.8 ms of a page of 50); Python sorts (time, id) keys in ~1 us each. Past
# ``unsorted_cap`` (twice the limit plus this) the server sorts and limits instead.
UNSORTED_EXTRA = 16
_MILLISECOND = timedelta(milliseconds=1)
# Beyond this many skipped messages a page start is found by the server's own skip: the
# windows would hand every skipped position to the client (on MongoDB a covered skip is
# cheaper than that; on SecantusDB both decode the room).
MAX_WINDOWED_SKIP = 10_000
# How long a room's density is used without reading its summary again. Between reads only
# ``latest`` drifts (new messages): the first window of a room that got k messages since
# holds k more documents. Each read of the room refreshes ``latest`` itself.
DENSITY_TTL_S = 10.0
# Rooms whose densities one process keeps: ~400 bytes each (tracemalloc), 4 MB when full.
DENSITY_MAX_ROOMS = 10_000
# What locating a position needs (``_id`` comes along): covered by ``channel_time_id``.
_POSITION = {"localDateTime": 1}


@dataclass(frozen=True)
class Density:
    """How a room's messages spread over time: only sizes windows, never decides results."""

    messages: int
    first: datetime
    latest: datetime

    def usable(self) -> bool:
        return self.messages >= 2 and self.latest > self.first

    def span_for(self, count: int) -> timedelta:
        """The time that holds ``count`` messages at the room's average rate, with slack."""
        per_message = (self.latest - self.first) / (self.messages - 1)
        return max(per_message * count * SLACK, _MILLISECOND)


class DensityCache:
    """Room densities read recently (``key`` -> ``Density``), for ``ttl_s`` each, at most
    ``max_rooms`` of them (the oldest entry goes first). Greenlets of one process share it
    without locks: no method switches in between its reads and writes."""

    def __init__(self, *, ttl_s: float = DENSITY_TTL_S, max_rooms: int = DENSITY_MAX_ROOMS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_rooms = max_rooms
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, Density]] = {}

    def get(self, key: Hashable) -> Density | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Hashable, density: Density) -> None:
        self._entries.pop(key, None)  # re-inserted last: the oldest entry is always first
        while len(self._entries) >= self._max_rooms:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + self._ttl_s, density)

    def saw(self, key: Hashable, newest: datetime) -> None:
        """A read found a message at ``newest``: windows of this room start there at least."""
        entry = self._entries.get(key)
        if entry is not None and newest > entry[1].latest:
            self._entries[key] = (entry[0], replace(entry[1], latest=newest))


def room_filter(channel_id: int, communities: Collection[int] | None = None) -> dict[str, Any]:
    """The query of a room's messages; with ``communities``, only those written in one of them."""
    return {**_room_only(channel_id), **(_community_scope(communities) or {})}


def _room_only(channel_id: int) -> dict[str, Any]:
    return {"channelId": Int64(channel_id)}


def _community_scope(communities: Collection[int] | None) -> dict[str, Any] | None:
    """The community part of a room's query (None: every community)."""
    if communities is None:
        return None
    ids = [Int64(c) for c in sorted(communities)]
    return {"communityId": ids[0] if len(ids) == 1 else {"$in": ids}}


def newest_documents(messages: Any, channel_id: int, count: int, *, density: Density | None,
                     before: tuple[datetime, ObjectId] | None = None,
                     projection: Mapping[str, Any] | None = None,
                     communities: Collection[int] | None = None) -> list[dict[str, Any]]:
    """The room's first ``count`` documents newest first; with ``before`` = (time, id) of a
    message, only those strictly older than it in that order. A ``projection`` must keep
    ``localDateTime`` and ``_id``: windows are put in that order here. With ``communities``,
    only messages of those communities count (the windows, sized for the whole room, then
    may grow: they stay bounded index ranges)."""
    reader = _SliceReader(messages, channel_id, communities, projection)
    docs: list[dict[str, Any]] = []
    upper: datetime | None = None  # exclusive upper bound of the next slice; None = no bound
    if before is not None:
        at, oid = before
        docs = reader.same_millisecond_older(at, oid, count)
        upper = at
    if len(docs) < count and density is not None and density.usable():
        upper = _fill_from_windows(reader, docs, count, density, upper)
    if len(docs) < count:
        docs += reader.slice(None, upper, count - len(docs))
    return docs[:count]


def nth_newest_position(messages: Any, channel_id: int, n: int, *, density: Density | None,
                        before: tuple[datetime, ObjectId] | None = None,
                        communities: Collection[int] | None = None) -> tuple[datetime, ObjectId] | None:
    """(time, id) of the room's ``n``-th newest message (``n >= 1``; only messages strictly
    older than ``before`` count, and only those of ``communities`` when given), or None when
    there are fewer: where page ``p`` of size ``s`` starts, for ``n = p * s``."""
    if n <= MAX_WINDOWED_SKIP:
        docs = newest_documents(messages, channel_id, n, density=density, before=before, projection=_POSITION,
                                communities=communities)
    else:
        docs = _SliceReader(messages, channel_id, communities, _POSITION).skipped(n - 1, before)
        n = 1
    return (docs[n - 1]["localDateTime"], docs[n - 1]["_id"]) if len(docs) >= n else None


def _fill_from_windows(reader: "_SliceReader", docs: list[dict[str, Any]], count: int,
                       density: Density, upper: datetime | None) -> datetime | None:
    """Append bounded slices to ``docs`` until it holds ``count`` documents, the windows reach
    the room's oldest message, or ``MAX_WINDOWS`` are spent; returns where the next slice ends."""
    top = upper if upper is not None else density.latest
    width = density.span_for(count - len(docs))
    seen = 0
    for _ in range(MAX_WINDOWS):
        lower = _whole_millisecond((upper if upper is not None else top) - width)
        found = reader.slice(lower, upper, count - len(docs))
        docs += found
        seen += len(found)
        upper = lower
        if len(docs) >= count or lower <= density.first:
            break
        width = _next_width(count - len(docs), seen, top - lower, width)
    return upper


def unsorted_cap(limit: int) -> int:
    """How many documents a window may hold and still be sorted here rather than by the server."""
    return 2 * limit + UNSORTED_EXTRA


def _time_and_id(doc: Mapping[str, Any]) -> tuple[datetime, ObjectId]:
    return doc["localDateTime"], doc["_id"]


def _whole_millisecond(at: datetime) -> datetime:
    """BSON dates hold milliseconds; a bound with a finer part would be truncated anyway."""
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


def _next_width(missing: int, seen: int, covered: timedelta, width: timedelta) -> timedelta:
    """Size the next window from the density the slices so far actually held."""
    if seen == 0:
        return width * GROWTH
    return max(covered / seen * missing * SLACK, _MILLISECOND)


class _SliceReader:
    """The query shapes of a room's reads: a time slice, one millisecond's older ids, and the
    one position after a skip.

    With a community scope, each read is an aggregate whose first ``$match`` is the room and
    the time range and whose second is the scope: the embedded server then reads the range
    from the index and filters only its documents, where one filter with the community in it
    read the whole room (183 against 5 ms for a window of 51 at 500,000 channel messages;
    bench/FINDINGS.md, tenth session). MongoDB merges the two stages into one index scan.
    """

    def __init__(self, messages: Any, channel_id: int, communities: Collection[int] | None,
                 projection: Mapping[str, Any] | None) -> None:
        self._messages = messages
        self._room = _room_only(channel_id)
        self._scope = _community_scope(communities)
        self._projection = projection

    def slice(self, lower: datetime | None, upper: datetime | None, limit: int) -> list[dict[str, Any]]:
        """``lower <= localDateTime < upper`` (a None bound is open), newest first, at most ``limit``.

        A window (``lower`` set) is expected to hold about ``limit`` documents, so it is read
        unsorted and sorted here, unless it holds ``unsorted_cap(limit)`` or more (a burst
        the estimate missed): then, like the open-ended rest of the room, the server sorts
        and limits."""
        bounds: dict[str, datetime] = {}
        if lower is not None:
            bounds["$gte"] = lower
        if upper is not None:
            bounds["$lt"] = upper
        query = {**self._room, "localDateTime": bounds} if bounds else dict(self._room)
        if lower is not None:
            cap = unsorted_cap(limit)
            docs = self._read(query, limit=cap)
            if len(docs) < cap:
                docs.sort(key=_time_and_id, reverse=True)
                return docs[:limit]
        return self._read(query, sort=NEWEST_FIRST, limit=limit)

    def same_millisecond_older(self, at: datetime, oid: ObjectId, limit: int) -> list[dict[str, Any]]:
        """Messages at exactly ``at`` whose id sorts before ``oid``: the cursor's own millisecond."""
        query = {**self._room, "localDateTime": at, "_id": {"$lt": oid}}
        return self._read(query, sort=[("_id", DESCENDING)], limit=limit)

    def skipped(self, skip: int, before: tuple[datetime, ObjectId] | None) -> list[dict[str, Any]]:
        """The one position after ``skip`` messages (newest first, older than ``before``), the
        skip done by the server."""
        room = dict(self._room)
        if before is not None:
            at, oid = before
            room["localDateTime"] = {"$lte": at}  # the index range
        stages: list[dict[str, Any]] = [{"$match": room}]
        if self._scope is not None:
            stages.append({"$match": self._scope})
        if before is not None:  # the anchor's own millisecond
            stages.append({"$match": {"$or": [{"localDateTime": {"$lt": at}}, {"_id": {"$lt": oid}}]}})
        stages += [{"$sort": dict(NEWEST_FIRST)}, {"$skip": skip}, {"$limit": 1}, {"$project": _POSITION}]
        return list(self._messages.aggregate(stages))

    def _read(self, query: dict[str, Any], *, limit: int,
              sort: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
        if self._scope is None:
            cursor = self._messages.find(query, self._projection)
            return list((cursor.sort(sort) if sort else cursor).limit(limit))
        stages: list[dict[str, Any]] = [{"$match": query}, {"$match": self._scope}]
        if sort:
            stages.append({"$sort": dict(sort)})
        stages.append({"$limit": limit})
        if self._projection:
            stages.append({"$project": dict(self._projection)})
        return list(self._messages.aggregate(stages))
