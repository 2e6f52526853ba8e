"""Each room's numbered events: what ``seq`` is, how it is handed out, and what a replay returns.

Every stored event of a room (a message, a reply, a file message, an edit, a delete) gets
``seq``: 1, 2, 3... per room, handed out by the ``EventLog`` counters before the event is
written, so every worker and node draws from one sequence. New messages are numbered a whole
group-commit round at a time (``number``: one allocation for every room of the round); an
edit or a delete is numbered before its intent is recorded in the outbox.

Once stored, an event's Kafka record is kept in the log under its number (``keep``), before
it is published: replay and gap healing read the log, and find there the very record
consumers read from Kafka. A number whose write failed (its sender got ERROR) is kept as a
*void* (``VOID_TOPIC``), so the log has an entry for every number handed out: a reader can
tell a number that will never carry an event from one still in flight. Voids are never
pushed. (A void is written best effort: when even that fails, the number stays missing, and
readers treat it as they treat a number in flight.)

``replay`` answers a resume (``SUBSCRIBE`` with ``since-seq``, and the HTTP ``after_seq``):
the events after a number, lowest first, or a reset when the log cannot give all of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Sequence

from app.chat import events
from app.chat.model import ChatMessage, Latest, PendingChange, RoomEvent, RoomKey
from app.chat.ports import EventLog
from app.chat.timefmt import utcnow
from app.errors import BadRequest

__all__ = ["RoomLog", "Replay", "VOID_TOPIC", "IN_FLIGHT_S", "Numbered"]

log = logging.getLogger(__name__)

# The topic of a void entry: a number whose event was never stored.
VOID_TOPIC = ""
# The longest a number can be handed out and its event not kept yet (a write under way): past
# it, a missing number is gone (pruned, or its writer died).
IN_FLIGHT_S = 30.0


@dataclass(frozen=True)
class Replay:
    """What a resume gets: the events after its number, or ``reset`` (the room's latest number)
    when they cannot all be replayed. ``latest`` is the room's highest number when read."""

    events: list[RoomEvent]
    latest: int
    reset: bool = False
    upto: int = 0  # the highest number read (voids included): where a paged reader goes on


@dataclass(frozen=True, slots=True)
class Numbered:
    """A stored new message with the record it is published (and kept) as."""

    message: ChatMessage
    record: events.Record


class RoomLog:
    """Numbers, keeps and replays rooms' events over an ``EventLog``.

    Args:
        log: the counters and the kept events.
        replay_max_events: the most events one resume replays; further back is a reset.
        retention_s: how long kept events are replayable (older ones are pruned).
    """

    def __init__(self, log: EventLog, *, replay_max_events: int, retention_s: float,
                 now: Callable[[], datetime] = utcnow) -> None:
        self._log = log
        self.replay_max_events = replay_max_events
        self._retention = timedelta(seconds=retention_s)
        self._now = now

    # -- numbering ----------------------------------------------------------------------------

    def number(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages with their ``seq``, in order within each room (one allocation for all,
        which also counts them as new messages in their rooms: see ``withdraw``).

        Raises ``BackendError`` (none is numbered) when the counters cannot be reached.
        """
        counts = Counter(message.room for message in messages)
        nexts = dict(self._log.allocate(counts, messages))
        numbered = []
        for message in messages:
            numbered.append(replace(message, seq=nexts[message.room]))
            nexts[message.room] += 1
        return numbered

    def saw(self, room: RoomKey, seq: int) -> None:
        """This process consumed event ``seq`` of ``room``: the counters may expect it (``EventLog.expect``)."""
        self._log.expect(room, seq)

    def number_change(self, change: PendingChange) -> PendingChange:
        return replace(change, seq=self._log.allocate({change.room: 1})[change.room])

    # -- keeping ------------------------------------------------------------------------------

    def keep(self, stored: Sequence[ChatMessage]) -> list[Numbered]:
        """Keep the records of newly stored messages in their rooms' logs; the records.

        Raises ``BackendError`` when the log cannot be written (then none of them is kept).
        """
        numbered = [Numbered(message, events.new_message_record(message)) for message in stored]
        now = self._now()
        self._log.append([RoomEvent(n.message.room, n.message.seq, n.record[0], n.record[2], now)
                          for n in numbered if n.message.seq is not None])
        return numbered

    def keep_change(self, change: PendingChange, message: ChatMessage | None) -> events.Record:
        """Keep a made edit's or delete's record in its room's log; the record."""
        record = events.change_record(change, message)
        if change.seq is not None:
            self._log.append([RoomEvent(change.room, change.seq, record[0], record[2], self._now())])
        return record

    def void(self, numbered: Sequence[tuple[RoomKey, int]]) -> None:
        """Numbers whose events were not stored: kept as voids (best effort, never raises)."""
        if not numbered:
            return
        now = self._now()
        try:
            self._log.append([RoomEvent(room, seq, VOID_TOPIC, b"", now) for room, seq in numbered])
        except Exception:  # noqa: BLE001 - a missing number is read as "in flight": still safe
            log.warning("could not keep %d void numbers; readers wait them out", len(numbered))

    def withdraw(self, messages: Sequence[ChatMessage]) -> None:
        """Numbered new messages that were surely not stored: their numbers kept as voids, and
        their count taken back (best effort, never raises: a count left too high is repaired by
        the summaries' rebuild)."""
        if not messages:
            return
        self.void([(message.room, message.seq) for message in messages if message.seq is not None])
        try:
            self._log.uncount(messages)
        except Exception:  # noqa: BLE001 - the sender hears its own outcome whatever the count says
            log.warning("could not take back the count of %d messages not stored", len(messages))

    # -- reading ------------------------------------------------------------------------------

    def replay(self, room: RoomKey, since: int) -> Replay:
        """The events of ``room`` after ``since``, lowest first, voids left out; or a reset.

        Numbers missing from the log after the first kept one are in flight (their records
        reach the subscriber live) or were never stored. Numbers missing right after ``since``
        for longer than ``IN_FLIGHT_S`` were pruned: that, or more than ``replay_max_events``
        events to replay, is a reset.

        Raises:
            BadRequest: ``since`` is ahead of the room's last number.
            BackendError: the log cannot be read.
        """
        latest = self._latest(room, since, "since-seq")
        if since == latest.seq:
            return Replay([], latest.seq, upto=since)
        if latest.seq - since > self.replay_max_events:
            return Replay([], latest.seq, reset=True)
        return self._read(room, since, latest.seq - since, latest)

    def page(self, room: RoomKey, since: int, limit: int) -> Replay:
        """Up to ``limit`` events after ``since`` (the HTTP catch-up), as ``replay`` judges them."""
        latest = self._latest(room, since, "after_seq")
        if since == latest.seq:
            return Replay([], latest.seq, upto=since)
        return self._read(room, since, limit, latest)

    def _latest(self, room: RoomKey, since: int, name: str) -> Latest:
        latest = self._log.latest(room)
        if since > latest.seq:
            raise BadRequest(f"{name}: ahead of the room's last event ({latest.seq})")
        return latest

    def _read(self, room: RoomKey, since: int, limit: int, latest: Latest) -> Replay:
        kept = self._log.after(room, since, limit)
        first_kept_at = kept[0].at if kept else latest.at
        if (not kept or kept[0].seq > since + 1) and self._settled(first_kept_at):
            return Replay([], latest.seq, reset=True)
        upto = min(since + limit, latest.seq)
        return Replay([event for event in kept if event.topic != VOID_TOPIC], latest.seq, upto=upto)

    def _settled(self, moment: datetime | None) -> bool:
        """Whether numbers handed out before ``moment`` can no longer be in flight."""
        return moment is None or moment < self._now() - timedelta(seconds=IN_FLIGHT_S)

    def missing(self, room: RoomKey, after: int, before: int) -> list[RoomEvent]:
        """Kept events numbered between ``after`` and ``before`` (exclusive), voids included."""
        if before - after <= 1:
            return []
        return self._log.after(room, after, before - after - 1)

    def went_quiet(self, since: datetime, until: datetime) -> dict[RoomKey, int]:
        """Rooms whose last number was handed out in [since, until), with that number."""
        return self._log.went_quiet(since, until)

    def prune(self) -> int:
        """Forget events older than the retention; how many."""
        return self._log.prune(self._now() - self._retention)


def _complete(kept: Sequence[RoomEvent], since: int, upto: int) -> bool:
    """Whether ``kept`` holds every number in (since, upto]."""
    return len(kept) == upto - since and (not kept or (kept[0].seq == since + 1 and kept[-1].seq == upto))
