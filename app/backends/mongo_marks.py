"""The outbox's marks of new messages: one ``unpublished`` document per stored round.

A group-commit round stores its messages with one ``insert_many`` per room kind, and each
of those is marked unpublished by one document written just before it::

    {_id: <mark id>, kind: "direct" | "channel", ids: [<message _id>, ...], pub: <since>}

The mark goes once the broker has acknowledged every message it lists. Which messages are
still owed is kept in this process (:class:`UnpublishedMarks`), by whoever wrote or claimed
the mark, so acknowledgements cost no database call until a mark's last one. One document per
round rather than one per message: the embedded MongoDB-wire server spent 455 us of its CPU
per message writing and deleting per-message marks, about 55 with one per round (bench/FINDINGS.md).

A mark of an earlier version (one per message: its ``_id`` is the message's, no ``ids``) is
read as a round of one, so a rolling deploy leaves no message unpublished.

When a process dies, its marks stay until a sweep elsewhere claims them (``claim_stale``)
and publishes the round again: messages it had already published go out twice, and the
fan-out consumers drop what they pushed before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.collection import Collection

from app.backends.mongo_schema import delete_unique_in
from app.chat.model import stored_time
from app.destinations import RoomKind

__all__ = ["UnpublishedMarks", "ClaimedMark"]


@dataclass(frozen=True, slots=True)
class ClaimedMark:
    """A stale mark a sweep took over: the messages its round stored (or tried to)."""

    id: ObjectId
    kind: RoomKind
    message_ids: tuple[ObjectId, ...]


class UnpublishedMarks:
    """Writes, settles and claims round marks in ``collection``; remembers what each still owes.

    Args:
        collection: ``unpublished``, with the write concern messages are stored with.
        guarded: runs one database call, turning its failure into ``BackendUnavailable``.
        now: the clock marks are stamped with.
    """

    def __init__(self, collection: Collection[dict[str, Any]], *, guarded: Callable[[Callable[[], Any]], Any],
                 now: Callable[[], datetime] = datetime.utcnow) -> None:
        self._collection = collection
        self._guarded = guarded
        self._now = now
        self._owed: dict[ObjectId, set[ObjectId]] = {}  # mark -> messages not acknowledged yet
        self._mark_of: dict[ObjectId, ObjectId] = {}  # message -> its mark

    def mark(self, kind: RoomKind, message_ids: Sequence[ObjectId]) -> None:
        """Mark a round's messages unpublished, before they are stored (raises if it cannot)."""
        mark_id = ObjectId()
        document = {"_id": mark_id, "kind": kind, "ids": list(message_ids), "pub": self._now()}
        self._guarded(lambda: self._collection.insert_one(document))
        self._owe(mark_id, message_ids)

    def settle(self, message_ids: Iterable[ObjectId]) -> None:
        """These messages need no publishing any more (acknowledged, or never stored): a mark
        that owes nothing else is removed."""
        done: list[ObjectId] = []
        legacy: list[ObjectId] = []
        for message_id in message_ids:
            mark_id = self._mark_of.pop(message_id, None)
            if mark_id is None:
                legacy.append(message_id)  # not ours to track: a per-message mark, if any
                continue
            owed = self._owed.get(mark_id)
            if owed is not None:
                owed.discard(message_id)
                if not owed:
                    del self._owed[mark_id]
                    done.append(mark_id)
        if done or legacy:
            self._guarded(lambda: delete_unique_in(self._collection, "_id", done + legacy))

    def claim_stale(self, older_than: datetime, owner: str, limit: int) -> list[ClaimedMark]:
        """Take over marks older than ``older_than``, oldest first, about ``limit`` messages in
        all (at least one mark); each mark goes to one claimer, which then owes its messages."""
        stale = {"pub": {"$lt": older_than}}
        candidates = self._guarded(lambda: list(
            self._collection.find(stale, {"_id": 1, "ids": 1}).sort("pub", ASCENDING).limit(limit)))
        chosen: list[ObjectId] = []
        messages = 0
        for doc in candidates:
            if chosen and messages + len(_message_ids(doc)) > limit:
                break
            chosen.append(doc["_id"])
            messages += len(_message_ids(doc))
        if not chosen:
            return []
        now = stored_time(self._now())  # what the database keeps, so the read below matches
        self._guarded(lambda: self._collection.update_many({"_id": {"$in": chosen}, **stale},
                                                            {"$set": {"pub": now, "pubBy": owner}}))
        won = {doc["_id"]: doc for doc in self._guarded(lambda: list(
            self._collection.find({"pub": now, "pubBy": owner})))}
        claimed = [self._still_owed(_claimed(won[mark_id])) for mark_id in chosen if mark_id in won]
        for mark in claimed:
            self._owe(mark.id, mark.message_ids)
        return claimed

    def _still_owed(self, mark: ClaimedMark) -> ClaimedMark:
        """A mark this process wrote or claimed before owes only what it has not settled."""
        owed = self._owed.get(mark.id)
        if owed is None:
            return mark  # another process's: whatever it published goes out again
        return replace(mark, message_ids=tuple(ident for ident in mark.message_ids if ident in owed))

    def _owe(self, mark_id: ObjectId, message_ids: Iterable[ObjectId]) -> None:
        owed = self._owed.setdefault(mark_id, set())
        for message_id in message_ids:
            owed.add(message_id)
            self._mark_of[message_id] = mark_id

    @property
    def owed(self) -> int:
        """Messages this process marked or claimed and has not settled."""
        return len(self._mark_of)


def _message_ids(doc: dict[str, Any]) -> list[ObjectId]:
    """A round mark lists its messages; an earlier version's mark is its one message's."""
    return list(doc["ids"]) if "ids" in doc else [doc["_id"]]


def _claimed(doc: dict[str, Any]) -> ClaimedMark:
    kind: RoomKind = "direct" if doc.get("kind") == "direct" else "channel"
    return ClaimedMark(doc["_id"], kind, tuple(_message_ids(doc)))
