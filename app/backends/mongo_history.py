"""The MongoDB read side: history pages, reply parents, read markers, unread counts, files.

``MongoReadSide(db)`` implements three Protocols of ``app.backends.base``:

- ``HistoryReader``: ``page`` (newest first, by page number or by a stable ``before`` cursor)
  and ``get_many`` (one ``$in`` query for all the parents of a page);
- ``ReadMarkers``: ``mark_read`` (one atomic upsert of ``read.<userId>`` per location, W-13/W-14)
  and ``room_activity`` (indexed counts, never loading a room's messages, W-18);
- ``FileStore``: uploads in the GridFS bucket ``uploads``, stored under a server-generated key
  (``filename`` = key; the client's name is metadata only, W-17).

Order within one ``localDateTime`` millisecond is by ``_id``, so pages and cursors are stable;
the ``channel_time_id`` index of ``mongo_schema.ensure_indexes`` serves both sorts.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, BinaryIO, Iterable, Sequence

from bson.int64 import Int64
from gridfs import GridFSBucket
from gridfs.errors import NoFile
from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from app.backends.base import ChatMessage, RoomActivity, RoomKind, StoredFile
from app.backends.mongo_schema import COLLECTIONS, READ_MARKERS, from_document, object_id
from app.errors import BackendUnavailable, BadRequest

__all__ = ["MongoReadSide", "FILE_BUCKET", "is_text_location"]

FILE_BUCKET = "uploads"
NEWEST_FIRST = [("localDateTime", DESCENDING), ("_id", DESCENDING)]
# Only text channels and DM rooms have read markers; `home`, voice (`com3,c-7`) and
# garbage such as `null` are ignored (W-13).
_TEXT_LOCATION = re.compile(r"[cr]-[1-9][0-9]{0,18}")


def is_text_location(location: str) -> bool:
    return isinstance(location, str) and _TEXT_LOCATION.fullmatch(location) is not None


class MongoReadSide:
    """HistoryReader, ReadMarkers and FileStore over one pymongo ``Database``."""

    def __init__(self, db: Database[Any], *, bucket_name: str = FILE_BUCKET) -> None:
        self._db = db
        self._bucket = GridFSBucket(db, bucket_name=bucket_name)
        self._files = db[f"{bucket_name}.files"]

    # -- HistoryReader -------------------------------------------------------------------

    def page(self, kind: RoomKind, channel_id: int, *, size: int, page: int = 0,
             before_id: str | None = None) -> list[ChatMessage]:
        """Newest first; with ``before_id``, only messages strictly older than that one.

        Raises ``BadRequest`` when ``before_id`` is not a message of this room.
        """
        query: dict[str, Any] = {"channelId": Int64(channel_id)}
        if before_id is not None:
            query.update(self._older_than(kind, channel_id, before_id))
        cursor = self._db[COLLECTIONS[kind]].find(query).sort(NEWEST_FIRST).skip(page * size).limit(size)
        return [from_document(kind, doc) for doc in _guarded(lambda: list(cursor))]

    def get_many(self, kind: RoomKind, message_ids: Iterable[str]) -> dict[str, ChatMessage]:
        ids = list({oid for oid in map(object_id, message_ids) if oid is not None})
        if not ids:
            return {}
        docs = _guarded(lambda: list(self._db[COLLECTIONS[kind]].find({"_id": {"$in": ids}})))
        return {str(doc["_id"]): from_document(kind, doc) for doc in docs}

    def _older_than(self, kind: RoomKind, channel_id: int, before_id: str) -> dict[str, Any]:
        oid = object_id(before_id)
        anchor = None
        if oid is not None:
            anchor = _guarded(lambda: self._db[COLLECTIONS[kind]].find_one(
                {"_id": oid, "channelId": Int64(channel_id)}, {"localDateTime": 1}))
        if anchor is None:
            raise BadRequest("before: unknown message")
        at = anchor["localDateTime"]
        return {"$or": [{"localDateTime": {"$lt": at}}, {"localDateTime": at, "_id": {"$lt": oid}}]}

    # -- ReadMarkers ---------------------------------------------------------------------

    def mark_read(self, location: str, user_id: int, at: datetime) -> None:
        """``messageTime[location].read[user_id] = at`` as one atomic upsert."""
        if not is_text_location(location):
            return
        update = {"$set": {f"read.{int(user_id)}": at}}
        markers = self._db[READ_MARKERS]
        try:
            _guarded(lambda: markers.update_one({"channelId": location}, update, upsert=True))
        except DuplicateKeyError:
            # Two first-time upserts raced on the unique index; the document exists now.
            _guarded(lambda: markers.update_one({"channelId": location}, update))

    def room_activity(self, user_id: int, room_ids: Sequence[int]) -> list[RoomActivity]:
        """Per DM room, in input order: others' messages after the user's mark, latest time."""
        rooms = list(dict.fromkeys(int(r) for r in room_ids))
        marks = self._read_marks(user_id, rooms)
        latest = self._latest_times("direct", rooms)
        return [RoomActivity(room_id=room, latest=latest.get(room),
                             count=self._unread(user_id, room, marks.get(room)) if room in latest else 0)
                for room in rooms]

    def _read_marks(self, user_id: int, rooms: list[int]) -> dict[int, datetime]:
        if not rooms:
            return {}
        field = f"read.{int(user_id)}"
        docs = _guarded(lambda: list(self._db[READ_MARKERS].find(
            {"channelId": {"$in": [f"r-{room}" for room in rooms]}}, {"channelId": 1, field: 1})))
        marks: dict[int, datetime] = {}
        for doc in docs:
            at = (doc.get("read") or {}).get(str(int(user_id)))
            if isinstance(at, datetime):
                marks[int(doc["channelId"][2:])] = at
        return marks

    def _latest_times(self, kind: RoomKind, rooms: list[int]) -> dict[int, datetime]:
        if not rooms:
            return {}
        pipeline = [
            {"$match": {"channelId": {"$in": [Int64(room) for room in rooms]}}},
            {"$sort": {"channelId": 1, "localDateTime": -1}},
            {"$group": {"_id": "$channelId", "latest": {"$first": "$localDateTime"}}},
        ]
        rows = _guarded(lambda: list(self._db[COLLECTIONS[kind]].aggregate(pipeline)))
        return {int(row["_id"]): row["latest"] for row in rows}

    def _unread(self, user_id: int, room_id: int, mark: datetime | None) -> int:
        query: dict[str, Any] = {"channelId": Int64(room_id), "userId": {"$ne": Int64(user_id)}}
        if mark is not None:
            query["localDateTime"] = {"$gt": mark}
        return int(_guarded(lambda: self._db[COLLECTIONS["direct"]].count_documents(query)))

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
                          uploaded_at=meta.uploaded_at)

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
            "uploadedAt": meta.uploaded_at}


def _stored_file(doc: dict[str, Any]) -> StoredFile:
    meta = doc.get("metadata") or {}
    return StoredFile(key=doc["filename"], filename=meta.get("originalName") or "file",
                      content_type=meta.get("contentType") or "application/octet-stream",
                      length=int(doc.get("length") or 0), kind=meta.get("kind", "direct"),
                      channel_id=int(meta.get("channelId") or 0), uploader_id=int(meta.get("uploaderId") or 0),
                      uploaded_at=meta.get("uploadedAt") or doc.get("uploadDate"))


def _guarded(call: Any) -> Any:
    """Run a database call; a lost or unreachable server becomes ``BackendUnavailable``."""
    try:
        return call()
    except ConnectionFailure as exc:  # includes AutoReconnect and server selection timeouts
        raise BackendUnavailable("database unavailable") from exc
