"""The gate of a resumed subscription: no live push overtakes its replay, and none repeats what
the client has.

A ``SUBSCRIBE`` with ``since-seq`` is registered at once (so nothing published after it is
missed) with a :class:`ResumeGate` in front of it, for as long as the subscription lives. The
fan-out hands the gate each live frame with its event's number (``seq``, None for pushes that
are not numbered, which always pass):

- while the session reads and sends the replay, the gate holds the frames;
- ``open`` is given the numbers replayed: the held frames go out after the replay, except
  those the replay carried; and for ``FILTER_S`` more (the records in flight when the log was
  read arrive within it), a frame whose number was replayed is dropped;
- a frame numbered at or below ``since-seq`` is always dropped: the client said it has it
  (a record published again after a restart, or read again from a broker that rewound).

Pure: no I/O, no gevent; an integer comparison per frame once the filter has ended.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["ResumeGate", "FILTER_S"]

# How long after a replay live frames are checked against the numbers it carried.
FILTER_S = 60.0


class ResumeGate:
    """Holds a resumed subscription's live frames until its replay is out, then filters them."""

    __slots__ = ("_floor", "_held", "_replayed", "_until", "_monotonic")

    def __init__(self, since_seq: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._floor = since_seq
        self._held: list[tuple[int | None, bytes]] | None = []  # (seq, frame) while replaying
        self._replayed: set[int] = set()
        self._until = 0.0
        self._monotonic = monotonic

    def admit(self, seq: int | None, frame: bytes) -> bool:
        """Whether a live frame goes out now (False: held, or something the client has)."""
        if self._held is not None:
            self._held.append((seq, frame))
            return False
        return self._fresh(seq)

    def open(self, replayed: set[int], floor: int | None = None) -> list[bytes]:
        """The replay is out: the held frames that did not repeat it, in arrival order.

        ``floor`` raises what the client has (a reset tells it to go on from the latest number).
        """
        held, self._held = self._held or [], None
        self._replayed = set(replayed)
        self._until = self._monotonic() + FILTER_S
        if floor is not None:
            self._floor = max(self._floor, floor)
        return [frame for seq, frame in held if self._fresh(seq)]

    def _fresh(self, seq: int | None) -> bool:
        if seq is None:
            return True
        if seq <= self._floor:
            return False
        if self._replayed:
            if self._monotonic() > self._until:
                self._replayed = set()
            elif seq in self._replayed:
                self._replayed.discard(seq)
                return False
        return True
