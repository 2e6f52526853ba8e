"""What one worker has pushed of each room's numbered events: the state of gap healing.

Pure (no I/O): ``workers/consumers.py`` asks, for each consumed record, whether its number
was pushed already (drop it), follows what was pushed (push it), or skips numbers this worker
has not seen (fetch those from the room's log first, ``room_log.RoomLog.missing``).

A :class:`RoomCursor` keeps ``low`` (every number up to it is settled: pushed, void, or given
up) and the numbers above ``low`` that are settled, plus *holes*: numbers looked for in the
log and not found there yet (their write is under way, or failed). A hole is given up after
``HOLE_PATIENCE_S``; a record that still comes for it later is pushed then (the numbers given
up are remembered, a few per room), so a late record is late, never dropped.

:class:`RoomCursors` bounds the memory: the rooms least recently seen are forgotten past
``max_rooms``. A forgotten room starts again from the next number this worker sees.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from app.chat.model import RoomKey

__all__ = ["RoomCursor", "RoomCursors", "HOLE_PATIENCE_S", "MAX_ROOMS", "GIVEN_UP_KEPT", "EARLY_WINDOW"]

# How long a number missing from the log may stay missing before the worker stops holding a
# place for it: longer than a stale outbox entry takes to be swept (OUTBOX_STALE_S, 30 s).
HOLE_PATIENCE_S = 90.0
MAX_ROOMS = 100_000
# Numbers given up per room that are still remembered (to push a very late record).
GIVEN_UP_KEPT = 64
# Numbers just before the first one a worker sees of a room that it still takes once.
EARLY_WINDOW = 16


class RoomCursor:
    """One room's settled numbers (see the module docstring)."""

    __slots__ = ("low", "settled", "holes", "given_up", "highest")

    def __init__(self, low: int) -> None:
        self.low = low
        self.settled: set[int] = set()
        self.holes: dict[int, float] = {}
        self.given_up: list[int] = []
        self.highest = low

    def seen(self, seq: int) -> bool:
        """Whether ``seq`` needs no push: settled, unless it was given up (then it is late)."""
        if seq in self.given_up:
            return False
        return seq <= self.low or seq in self.settled

    def unlooked(self, seq: int) -> bool:
        """Whether numbers below ``seq`` are neither settled nor holes already looked for."""
        if seq - self.low - 1 > len(self.settled) + len(self.holes):
            return True  # more numbers than it knows of: some were never looked for (no scan needed)
        return any(n not in self.settled and n not in self.holes for n in range(self.low + 1, seq))

    def settle(self, seq: int) -> None:
        """``seq`` was pushed (or is void): move ``low`` past every settled number after it."""
        if seq in self.given_up:
            self.given_up.remove(seq)
            return
        self.holes.pop(seq, None)
        self.highest = max(self.highest, seq)
        if seq <= self.low:
            return
        self.settled.add(seq)
        self._advance()

    def wait_for(self, numbers: Iterable[int], now: float) -> None:
        """Numbers looked for in the log and not found: holes, noted at ``now``."""
        for seq in numbers:
            if seq > self.low and seq not in self.settled:
                self.holes.setdefault(seq, now)

    def give_up(self, before: float) -> list[int]:
        """Stop holding a place for holes noted before ``before``; the numbers given up."""
        old = sorted(seq for seq, noted in self.holes.items() if noted < before)
        for seq in old:
            del self.holes[seq]
            self.settled.add(seq)
        self.given_up = (self.given_up + old)[-GIVEN_UP_KEPT:]
        self._advance()
        return old

    def _advance(self) -> None:
        while self.low + 1 in self.settled:
            self.low += 1
            self.settled.discard(self.low)


class RoomCursors:
    """The cursors of the rooms this worker has seen, the least recently seen forgotten first."""

    def __init__(self, max_rooms: int = MAX_ROOMS) -> None:
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[RoomKey, RoomCursor] = OrderedDict()

    def get(self, room: RoomKey) -> RoomCursor | None:
        cursor = self._rooms.get(room)
        if cursor is not None:
            self._rooms.move_to_end(room)
        return cursor

    def start(self, room: RoomKey, seq: int) -> RoomCursor:
        """A room first seen at number ``seq + 1``: what comes before counts as settled, except that
        the ``EARLY_WINDOW`` numbers just before may still come once (records of one room are
        spread over several topics, so they are not always consumed in order)."""
        cursor = self._rooms[room] = RoomCursor(seq)
        cursor.given_up = list(range(max(1, seq + 1 - EARLY_WINDOW), seq + 1))
        if len(self._rooms) > self._max_rooms:
            self._rooms.popitem(last=False)
        return cursor

    def __len__(self) -> int:
        return len(self._rooms)

    def items(self) -> list[tuple[RoomKey, RoomCursor]]:
        return list(self._rooms.items())
