"""The MongoDB read side: history pages, reply parents, read markers, unread counts, files.

``MongoReadSide(db)`` implements three Protocols of ``app.chat.ports``:

- ``HistoryReader``: ``page`` (newest first, by page number or by a stable ``before`` cursor)
  and ``get_many`` (the parents of a page, looked up by id with ``find_unique_in``);
- ``ReadMarkers``: ``mark_read`` (one atomic upsert of ``read.<userId>`` per location, W-13/W-14)
  and ``room_activity`` (exact unread counts and latest times from room summaries, W-18);
- ``FileStore``: uploads in the GridFS bucket ``uploads``, stored under a server-generated key
  (``filename`` = key; the client's name is metadata only, W-17).

Order within one ``localDateTime`` millisecond is by ``_id``, so pages and cursors are stable;
the ``channel_time_id`` index of ``mongo_schema.ensure_indexes`` serves both sorts.

``room_activity`` (message-count) answers from the room summaries of ``mongo_summaries``
(the rooms' ``roomSeq`` documents: per room ``n``, ``byUser.<id>``, ``latest``, ``first``, kept on write), read
for all rooms with ``find_unique_in`` (one ``$in`` per ``IN_CHUNK`` rooms), and the read marks
the same way. Per room:

- no mark, or a mark older than ``first``: unread = ``n - byUser.<user>``, no count query;
- a mark at or after ``latest``: 0;
- a mark with a usable read position (``seen.<user>`` beside ``read.<user>``, recorded by
  ``mark_read`` for a DM room: ``mongo_summaries.ReadPosition``): a subtraction, no count query;
- otherwise one aggregate over the index range ``localDateTime > mark`` (then
  ``userId != user``, then ``$count``): it costs the messages after the mark, not the room.
  The author test is a separate stage because a filter with two operator fields is not
  served by the index range on SecantusDB (it scanned the whole room; MongoDB merges them).

Summaries are used only while believed (``mongo_summaries``: the marker document). Without
the marker every room is counted from its messages as before summaries existed: the
never-read aggregate (``$group``: others' messages and the latest time in one pass) or the
latest time (one ``find`` newest first, ``limit(1)``) plus the ranged count. With it, rooms
without a summary are checked in one ``distinct``: rooms with no message (the usual case)
are empty, rooms with messages are counted that way and logged (a rebuild is due).
Counts are exact, never capped.

``page``: the newest ``size`` messages (after ``page * size`` of them, or strictly older
than a ``before`` cursor message) come from ``mongo_recent.newest_documents``: bounded time
windows sized from the room's density (its summary's count and times, kept for a few
seconds per process in a ``DensityCache``), with results identical to ``find`` + sort +
limit (see there). A later page first finds where it starts, the time and id of the
``page * size``-th newest message (from the same windows, reading only those two fields,
covered by ``channel_time_id``; past ``MAX_WINDOWED_SKIP`` by the server's own skip), then
reads the page as "older than that one", so one page of documents is returned, not all.

SecantusDB (the dev/test server) has no limit push-down: a ``find`` or aggregate fetches and
decodes every document of its index range (about 30 us each), which is why every query here
is a bounded index range; on MongoDB they are index seeks.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, BinaryIO, Callable, Collection, Iterable, Mapping, NamedTuple, Sequence

from bson import ObjectId
from bson.int64 import Int64
from gridfs import GridFSBucket
from gridfs.errors import NoFile
from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from app.backends.mongo_recent import Density, DensityCache, newest_documents, nth_newest_position, room_filter
from app.backends.mongo_schema import COLLECTIONS, READ_MARKERS, find_unique_in, from_document, object_id
from app.backends.mongo_summaries import MARK_FRESH_S, REBUILD_COMMAND, ReadPosition, RoomSummaries, RoomSummary
from app.chat.model import ChatMessage, RoomActivity, StoredFile
from app.destinations import RoomKind, parse_room_key, room_key
from app.errors import BackendUnavailable, BadRequest

__all__ = ["MongoReadSide", "FILE_BUCKET"]

log = logging.getLogger(__name__)

FILE_BUCKET = "uploads"
# The stale denormalised copies of a reply's parent: dropped here, not by a projection, which
# SecantusDB evaluates in Python per document (1.5-2 ms of a ~5 ms page); on MongoDB the
# price is the copies' bytes on the wire (a reply's parentContent).
STALE_PARENT_FIELDS = ("parentName", "parentContent")
EMPTY_ROOM = RoomSummary(messages=0)


class Mark(NamedTuple):
    """A user's read mark in a room, with the read position recorded with it (if any)."""

    at: datetime
    position: ReadPosition | None


def _position_of(doc: dict[str, Any], user: str, at: datetime) -> ReadPosition | None:
    """The position stored with the mark; only one recorded with this very mark counts (a
    writer that keeps no positions may have moved the mark since)."""
    position = ReadPosition.from_document((doc.get("seen") or {}).get(user))
    return position if position is not None and position.at == at else None


class MongoReadSide:
    """HistoryReader, ReadMarkers and FileStore over one pymongo ``Database``."""

    def __init__(self, db: Database[Any], *, bucket_name: str = FILE_BUCKET,
                 now: Callable[[], datetime] = datetime.utcnow) -> None:
        self._db = db
        self._now = now
        self._summaries = RoomSummaries(db)
        self._densities = DensityCache()
        self._bucket = GridFSBucket(db, bucket_name=bucket_name)
        self._files = db[f"{bucket_name}.files"]

    # -- HistoryReader -------------------------------------------------------------------

    def page(self, kind: RoomKind, channel_id: int, *, size: int, page: int = 0,
             before_id: str | None = None, communities: Collection[int] | None = None) -> list[ChatMessage]:
        """Newest first; with ``before_id``, only messages strictly older than that one; with
        ``communities``, only messages written in one of them (a channel's readers').

        Raises ``BadRequest`` when ``before_id`` is not a message of this room (and of those
        communities). The stale ``parentName``/``parentContent`` copies are dropped (renderers
        take a parent's current content from ``get_many``), so those two fields are None here.
        """
        messages = self._db[COLLECTIONS[kind]]
        before = self._anchor(kind, channel_id, before_id, communities) if before_id is not None else None
        density = self._density(kind, channel_id)
        if page > 0:
            before = _guarded(lambda: nth_newest_position(messages, channel_id, page * size, density=density,
                                                          before=before, communities=communities))
            if before is None:
                return []
        docs = _guarded(lambda: newest_documents(messages, channel_id, size, density=density, before=before,
                                                 communities=communities))
        if docs:
            self._densities.saw((kind, channel_id), docs[0]["localDateTime"])
        return [from_document(kind, _without_stale_parent(doc)) for doc in docs]

    def _density(self, kind: RoomKind, channel_id: int) -> Density | None:
        """The room's density from this process's cache, else from its summary (then cached)."""
        density = self._densities.get((kind, channel_id))
        if density is None:
            density = _guarded(lambda: self._summaries.density(kind, channel_id))
            if density is not None and density.usable():
                self._densities.put((kind, channel_id), density)
        return density

    def get_many(self, kind: RoomKind, message_ids: Iterable[str]) -> dict[str, ChatMessage]:
        ids = list({oid for oid in map(object_id, message_ids) if oid is not None})
        if not ids:
            return {}
        docs = _guarded(lambda: find_unique_in(self._db[COLLECTIONS[kind]], "_id", ids))
        return {str(doc["_id"]): from_document(kind, doc) for doc in docs}

    def _anchor(self, kind: RoomKind, channel_id: int, before_id: str,
                communities: Collection[int] | None) -> tuple[datetime, ObjectId]:
        """Time and id of the cursor message, which must belong to this room."""
        oid = object_id(before_id)
        anchor = None
        if oid is not None:
            anchor = _guarded(lambda: self._db[COLLECTIONS[kind]].find_one(
                {"_id": oid, **room_filter(channel_id, communities)}, {"localDateTime": 1}))
        if anchor is None:
            raise BadRequest("before: unknown message")
        return anchor["localDateTime"], oid

    # -- ReadMarkers ---------------------------------------------------------------------

    def mark_read(self, location: str, user_id: int, at: datetime) -> None:
        """``messageTime[location].read[user_id] = at`` as one atomic upsert; for a DM room,
        with the room's read position beside it (``seen.<user_id>``) when there is one."""
        # Only text channels and DM rooms have read markers; `home`, voice (`com3,c-7`) and
        # garbage such as `null` are ignored (W-13).
        key = parse_room_key(location) if isinstance(location, str) else None
        if key is None:
            return
        position = self._position(key.ident, user_id, at) if key.kind == "direct" else None
        seen = f"seen.{int(user_id)}"
        update: dict[str, Any] = {"$set": {f"read.{int(user_id)}": at}}
        if position is not None:
            update["$set"][seen] = position.document()
        else:
            update["$unset"] = {seen: ""}
        markers = self._db[READ_MARKERS]
        try:
            _guarded(lambda: markers.update_one({"channelId": location}, update, upsert=True))
        except DuplicateKeyError:
            # Two first-time upserts raced on the unique index; the document exists now.
            _guarded(lambda: markers.update_one({"channelId": location}, update))

    def room_activity(self, user_id: int, room_ids: Sequence[int]) -> list[RoomActivity]:
        """Per DM room, in input order: others' messages after the user's mark, latest time."""
        rooms = list(dict.fromkeys(int(r) for r in room_ids))
        if not rooms:
            return []
        marks = self._read_marks(user_id, rooms)
        summaries = self._believed_summaries(rooms)
        self._read_removals(summaries, marks)
        activity = []
        for room in rooms:
            summary = summaries.get(room)
            answer = self._from_summary(user_id, room, marks.get(room), summary) if summary is not None else None
            activity.append(answer or self._counted(user_id, room, marks.get(room)))
        return activity

    def _believed_summaries(self, rooms: list[int]) -> dict[int, RoomSummary]:
        """Summaries to answer from (none while not believed); rooms without one that hold no
        message get an empty one, rooms without one that do hold messages are left to counting."""
        loaded = _guarded(lambda: self._summaries.load("direct", rooms))
        if loaded is None:
            return {}
        missing = [room for room in rooms if room not in loaded]
        if missing:
            holding = self._rooms_with_messages(missing)
            if holding:
                log.warning("DM rooms %s hold messages but no summary: counted from the messages; run `%s`",
                            sorted(holding), REBUILD_COMMAND)
            loaded.update({room: EMPTY_ROOM for room in missing if room not in holding})
        return loaded

    def _read_removals(self, summaries: dict[int, RoomSummary], marks: Mapping[int, Mark]) -> None:
        """Add the last removals to the summaries whose unread count after a read position
        needs them (messages went since the position): one more lookup, for those rooms only."""
        needing = {room: summary for room, summary in summaries.items()
                   if (mark := marks.get(room)) is not None and mark.position is not None
                   and summary.needs_removals(mark.position)}
        if needing:
            summaries.update(_guarded(lambda: self._summaries.with_removals("direct", needing)))

    def _rooms_with_messages(self, rooms: list[int]) -> set[int]:
        """Which of ``rooms`` hold any message: one ``distinct`` (an index-only scan on MongoDB)."""
        messages = self._db[COLLECTIONS["direct"]]
        found = _guarded(lambda: messages.distinct("channelId", {"channelId": {"$in": [Int64(r) for r in rooms]}}))
        return {int(room) for room in found}

    def _position(self, room: int, user_id: int, at: datetime) -> ReadPosition | None:
        """The DM room's read position for a mark at ``at``: only for a mark about now (see
        ``MARK_FRESH_S``), and none when the summary cannot be read (the mark alone is kept)."""
        if abs((self._now() - at).total_seconds()) > MARK_FRESH_S:
            return None
        try:
            summary = _guarded(lambda: self._summaries.one("direct", room))
        except BackendUnavailable:
            return None
        # No summary yet: nothing was counted there. (A room holding messages without one is
        # counted from its messages, and the rebuild that gives it one starts a generation.)
        return (summary or EMPTY_ROOM).position(user_id, at)

    def _from_summary(self, user_id: int, room: int, mark: Mark | None,
                      summary: RoomSummary) -> RoomActivity | None:
        """The answer the summary gives (a count query only for a mark inside the room's
        time range); None when the summary cannot be right (counted from the messages then)."""
        if summary.messages == 0:
            return RoomActivity(room_id=room, count=0, latest=None)
        unread_if_never_read = summary.messages - summary.written_by(user_id)
        if summary.messages < 0 or summary.latest is None or unread_if_never_read < 0:
            log.warning("DM room %d has an impossible summary: counted from the messages; run `%s`",
                        room, REBUILD_COMMAND)
            return None
        if mark is None or (summary.first is not None and mark.at < summary.first):
            return RoomActivity(room_id=room, count=unread_if_never_read, latest=summary.latest)
        if mark.at >= summary.latest:
            return RoomActivity(room_id=room, count=0, latest=summary.latest)
        unread = summary.unread_since(mark.position, user_id) if mark.position is not None else None
        if unread is None:
            unread = self._count_after(user_id, room, mark.at)
        return RoomActivity(room_id=room, count=unread, latest=summary.latest)

    def _counted(self, user_id: int, room: int, read: Mark | None) -> RoomActivity:
        """The answer from the messages alone (no summary believed for this room)."""
        messages = self._db[COLLECTIONS["direct"]]
        if read is None:
            return self._never_read(messages, user_id, room)
        mark = read.at
        latest = self._latest_time(messages, {"channelId": Int64(room)})
        if latest is None or latest <= mark:
            return RoomActivity(room_id=room, count=0, latest=latest)  # nothing newer than the mark
        return RoomActivity(room_id=room, count=self._count_after(user_id, room, mark), latest=latest)

    def _count_after(self, user_id: int, room: int, mark: datetime) -> int:
        """Others' messages strictly after the mark: the index range ``localDateTime > mark``."""
        pipeline = [{"$match": {"channelId": Int64(room), "localDateTime": {"$gt": mark}}},
                    {"$match": {"userId": {"$ne": Int64(user_id)}}},
                    {"$count": "n"}]
        rows = _guarded(lambda: list(self._db[COLLECTIONS["direct"]].aggregate(pipeline)))
        return int(rows[0]["n"]) if rows else 0

    @staticmethod
    def _latest_time(messages: Any, in_room: dict[str, Any]) -> datetime | None:
        """Newest ``localDateTime`` of the room: one seek of ``channel_time``, covered by it."""
        cursor = messages.find(in_room, {"localDateTime": 1, "_id": 0}).sort("localDateTime", DESCENDING).limit(1)
        docs = _guarded(lambda: list(cursor))
        return docs[0]["localDateTime"] if docs else None

    @staticmethod
    def _never_read(messages: Any, user_id: int, room: int) -> RoomActivity:
        """Every message of the others counts, so the whole room is read anyway: one pass gives
        the count and the latest time."""
        mine = {"$eq": ["$userId", Int64(user_id)]}
        pipeline = [{"$match": {"channelId": Int64(room)}},
                    {"$group": {"_id": None, "latest": {"$max": "$localDateTime"},
                                "count": {"$sum": {"$cond": [mine, 0, 1]}}}}]
        rows = _guarded(lambda: list(messages.aggregate(pipeline)))
        if not rows:
            return RoomActivity(room_id=room, count=0, latest=None)
        return RoomActivity(room_id=room, count=int(rows[0]["count"]), latest=rows[0]["latest"])

    def _read_marks(self, user_id: int, rooms: list[int]) -> dict[int, Mark]:
        if not rooms:
            return {}
        user = str(int(user_id))
        projection = {"channelId": 1, f"read.{user}": 1, f"seen.{user}": 1}
        docs = _guarded(lambda: find_unique_in(self._db[READ_MARKERS], "channelId",  # one per location
                                               [room_key("direct", room) for room in rooms], projection))
        marks: dict[int, Mark] = {}
        for doc in docs:
            at = (doc.get("read") or {}).get(user)
            key = parse_room_key(doc["channelId"])
            if isinstance(at, datetime) and key is not None:
                marks[key.ident] = Mark(at, _position_of(doc, user, at))
        return marks

    # -- FileStore -----------------------------------------------------------------------

    def save(self, data: BinaryIO, meta: StoredFile) -> StoredFile:
        """Store ``data``; a new random key is chosen unless ``meta.key`` is set."""
        key = meta.key or uuid.uuid4().hex
        stream = self._bucket.open_upload_stream(key, metadata=_file_metadata(meta))
        try:
            length = _guarded(lambda: _copy_and_close(data, stream))
        except BaseException:
            _abort_quietly(stream)
            raise
        return StoredFile(key=key, filename=meta.filename, content_type=meta.content_type, length=length,
                          kind=meta.kind, channel_id=meta.channel_id, uploader_id=meta.uploader_id,
                          uploaded_at=meta.uploaded_at, community_id=meta.community_id)

    def open(self, key: str) -> tuple[StoredFile, BinaryIO] | None:
        doc = _guarded(lambda: self._files.find_one({"filename": key}))
        if doc is None:
            return None
        try:
            stream = _guarded(lambda: self._bucket.open_download_stream(doc["_id"]))
        except NoFile:
            return None
        return _stored_file(doc), stream  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        """Remove a stored file (used to undo an upload whose message could not be published)."""
        for doc in _guarded(lambda: list(self._files.find({"filename": key}, {"_id": 1}))):
            try:
                _guarded(lambda: self._bucket.delete(doc["_id"]))
            except NoFile:
                pass


def _without_stale_parent(doc: dict[str, Any]) -> dict[str, Any]:
    for name in STALE_PARENT_FIELDS:
        doc.pop(name, None)
    return doc


def _copy_and_close(data: BinaryIO, stream: Any, chunk: int = 256 * 1024) -> int:
    length = 0
    while block := data.read(chunk):
        stream.write(block)
        length += len(block)
    stream.close()  # writes the files document: only now is the upload visible
    return length


def _abort_quietly(stream: Any) -> None:
    """Remove the chunks of a failed upload; a second failure must not hide the first."""
    try:
        stream.abort()
    except Exception:
        pass


def _file_metadata(meta: StoredFile) -> dict[str, Any]:
    return {"originalName": meta.filename, "contentType": meta.content_type, "kind": meta.kind,
            "channelId": Int64(meta.channel_id), "uploaderId": Int64(meta.uploader_id),
            "uploadedAt": meta.uploaded_at,
            "communityId": Int64(meta.community_id) if meta.community_id is not None else None}


def _stored_file(doc: dict[str, Any]) -> StoredFile:
    meta = doc.get("metadata") or {}
    return StoredFile(key=doc["filename"], filename=meta.get("originalName") or "file",
                      content_type=meta.get("contentType") or "application/octet-stream",
                      length=int(doc.get("length") or 0), kind=meta.get("kind", "direct"),
                      channel_id=int(meta.get("channelId") or 0), uploader_id=int(meta.get("uploaderId") or 0),
                      uploaded_at=meta.get("uploadedAt") or doc.get("uploadDate"),
                      community_id=int(meta["communityId"]) if meta.get("communityId") is not None else None)


def _guarded(call: Any) -> Any:
    """Run a database call; a lost or unreachable server becomes ``BackendUnavailable``."""
    try:
        return call()
    except ConnectionFailure as exc:  # includes AutoReconnect and server selection timeouts
        raise BackendUnavailable("database unavailable") from exc
