"""Gap healing: every numbered room event reaches this worker's subscribers once, even when the
broker lost or repeated its record.

The fan-out consumer hands :class:`GapHealer` each consumed record that carries a room
number (``seq``). Per room it follows what was pushed (``app.chat.room_cursors``):

- a number already pushed is dropped (a re-published or re-read record);
- a number after ones this worker never got makes it read those from the room's log in
  MongoDB (``room_log.RoomLog.missing``) and push them first, in order; numbers not in the log
  yet are holes, pushed when their record comes;
- every ``quiet_check_s`` it asks which rooms went quiet in the last window
  (``went_quiet``: their last number was handed out between ``settle_s`` and
  ``settle_s + quiet_check_s`` ago) and reads the tail of any room whose last number it has not
  pushed, and of any room with holes. So a record lost at the very end of a room's activity
  is delivered ``settle_s`` to ``settle_s + quiet_check_s`` after the room's last event.

Healing reads MongoDB from the consumer's greenlet: rare (a lost record, or records of one
room consumed out of order across topics), and one query per gap. When the log cannot be
read, the missing numbers stay holes and the next quiet check tries again.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable, Protocol

from app.chat.events import Decoded, decode
from app.chat.model import RoomEvent, RoomKey
from app.chat.room_cursors import HOLE_PATIENCE_S, RoomCursor, RoomCursors
from app.chat.room_log import VOID_TOPIC
from app.chat.timefmt import utcnow

__all__ = ["GapHealer", "SequenceReader", "SETTLE_S", "HEAL_MAX"]

log = logging.getLogger(__name__)

# How long after a room's last number its record is normally consumed: a quiet room is
# looked at once this much has passed since its last event.
SETTLE_S = 2.0
# The most missing events read for one gap; a worker further behind than this in one room
# (it was away) starts that room again from the record in hand.
HEAL_MAX = 1000


class SequenceReader(Protocol):
    """``app.chat.room_log.RoomLog``: the room logs, read, and told which numbers were consumed."""

    def missing(self, room: RoomKey, after: int, before: int) -> list[RoomEvent]: ...

    def went_quiet(self, since: datetime, until: datetime) -> dict[RoomKey, int]: ...

    def saw(self, room: RoomKey, seq: int) -> None: ...


class GapHealer:
    """One worker's gap healing (see the module docstring); ``push`` delivers a decoded record."""

    def __init__(self, reader: SequenceReader, push: Callable[[Decoded], None], *, quiet_check_s: float,
                 settle_s: float = SETTLE_S, cursors: RoomCursors | None = None,
                 now: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._reader = reader
        self._push = push
        self._quiet_check_s = quiet_check_s
        self._settle = timedelta(seconds=settle_s)
        self._cursors = cursors if cursors is not None else RoomCursors()
        self._now = now
        self._monotonic = monotonic
        self._checked_until: datetime | None = None
        self._next_check = monotonic() + quiet_check_s
        self._holey: set[RoomKey] = set()
        self._failing = False
        self.dropped = 0
        self.healed = 0

    def admit(self, decoded: Decoded) -> None:
        """Push a consumed numbered record unless it was pushed; heal the gap before it first."""
        room, seq = decoded.room, decoded.seq
        assert room is not None and seq is not None
        self._reader.saw(room, seq)  # so this worker's next SEND in the room is numbered in one call
        cursor = self._cursors.get(room) or self._cursors.start(room, seq - 1)
        if cursor.seen(seq):
            self.dropped += 1
            return
        if seq > cursor.low + 1 and cursor.unlooked(seq):
            self._heal(room, cursor, seq)
        self._push(decoded)
        cursor.settle(seq)
        self._note_holes(room, cursor)

    def check_quiet(self) -> None:
        """Heal the tails of rooms that went quiet, when ``quiet_check_s`` has passed."""
        if self._monotonic() < self._next_check:
            return
        self._next_check = self._monotonic() + self._quiet_check_s
        until = self._now() - self._settle
        since = self._checked_until or until - timedelta(seconds=self._quiet_check_s)
        try:
            quiet = self._reader.went_quiet(since, until)
        except Exception:  # noqa: BLE001 - the database is away: the next check covers this window too
            self._report_failure()
            return
        self._checked_until = until
        self._failing = False
        for room in set(quiet) | self._holey:
            cursor = self._cursors.get(room)
            if cursor is None:
                continue  # never pushed here: the next record of the room starts it
            last = max(quiet.get(room, 0), cursor.highest)
            if last > cursor.low:
                self._heal(room, cursor, last + 1)
                self._note_holes(room, cursor)

    def _heal(self, room: RoomKey, cursor: RoomCursor, before: int) -> None:
        """Push the kept events numbered between the cursor and ``before`` that were not pushed."""
        if before - cursor.low - 1 > HEAL_MAX:
            log.info("room %s: %d events behind; starting again from %d", room, before - cursor.low - 1, before)
            cursor.low = before - 1 - HEAL_MAX
        try:
            found = self._reader.missing(room, cursor.low, before)
        except Exception:  # noqa: BLE001 - unreadable now: the numbers wait as holes
            self._report_failure()
            found = []
        got = set()
        healed = 0
        for event in found:
            got.add(event.seq)
            if cursor.seen(event.seq):
                continue
            if event.topic != VOID_TOPIC:
                self._push(decode(event.topic, event.value))
                healed += 1
            cursor.settle(event.seq)
        if healed:
            self.healed += healed
            log.info("room %s: delivered %d events from its log that the broker did not bring", room, healed)
        cursor.wait_for((n for n in range(cursor.low + 1, before) if n not in got), self._monotonic())

    def _note_holes(self, room: RoomKey, cursor: RoomCursor) -> None:
        if cursor.holes:
            cursor.give_up(self._monotonic() - HOLE_PATIENCE_S)
        if cursor.holes:
            self._holey.add(room)
        else:
            self._holey.discard(room)

    def _report_failure(self) -> None:
        if not self._failing:
            log.warning("gap healing cannot read the room logs; retrying at the next quiet check")
        self._failing = True
