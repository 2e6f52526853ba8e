"""The numbered events this worker pushed lately, per room: what a resume replays without the database.

Every worker consumes every room's events, so the fan-out consumer hands each numbered event
it pushes (decoded: its pushes, room, ``seq``, channel scope) to :class:`RoomMemory`. A resume
(``SUBSCRIBE`` with ``since-seq``, ``ChatService.resume``) asks it first: if it holds every
number from ``since + 1`` to the highest it has, those events are the replay, and anything
numbered higher is still on its way to this worker's consumer, so it reaches the subscription
live (the subscription is registered before the replay is read; app/stomp/resume.py). When it
holds less (a number it never pushed: a void, or one from before the worker started or before
the room was forgotten), the resume reads the room's log (``room_log.RoomLog.replay``).

Bounded: at most ``PER_ROOM`` events per room (the oldest go first) and ``TOTAL`` in all (the
rooms least recently pushed to are forgotten first). Pure: no I/O, no gevent.
"""

from __future__ import annotations

from collections import OrderedDict

from app.chat.events import Decoded
from app.chat.model import RoomKey

__all__ = ["RoomMemory", "PER_ROOM", "TOTAL"]

# Events kept per room and in all (a push body is a few hundred bytes: ~10 MB in all).
PER_ROOM = 1_000
TOTAL = 20_000


class RoomMemory:
    """Recent pushed events by room and number (see the module docstring)."""

    def __init__(self, per_room: int = PER_ROOM, total: int = TOTAL) -> None:
        self._per_room = per_room
        self._total = total
        self._rooms: OrderedDict[RoomKey, dict[int, Decoded]] = OrderedDict()
        self._count = 0

    def remember(self, decoded: Decoded) -> None:
        """A numbered event this worker pushed (live, or healed from the log)."""
        room, seq = decoded.room, decoded.seq
        if room is None or seq is None:
            return
        kept = self._rooms.get(room)
        if kept is None:
            kept = self._rooms[room] = {}
        else:
            self._rooms.move_to_end(room)
        if seq in kept:
            return
        kept[seq] = decoded
        self._count += 1
        if len(kept) > self._per_room:
            del kept[next(iter(kept))]  # the first kept: the oldest pushed
            self._count -= 1
        while self._count > self._total:
            _, forgotten = self._rooms.popitem(last=False)
            self._count -= len(forgotten)

    def after(self, room: RoomKey, since: int) -> list[Decoded] | None:
        """Every event of ``room`` after ``since``, lowest first, if this memory holds them all
        from ``since + 1`` on; else None (the room's log must be read)."""
        kept = self._rooms.get(room)
        if not kept:
            return None
        top = max(kept)
        if since > top:
            return None
        recent = []
        for seq in range(since + 1, top + 1):
            event = kept.get(seq)
            if event is None:
                return None  # a number it never pushed
            recent.append(event)
        return recent

    def __len__(self) -> int:
        """Events held, in all rooms."""
        return self._count
