"""The gate of a resumed subscription: no live push overtakes its replay, and none repeats it.

A ``SUBSCRIBE`` with ``since-seq`` is registered at once (so nothing published after it is
missed) with a :class:`ResumeGate` in front of it. While the session reads and sends the
replay, the fan-out hands the gate that subscription's live frames, and the gate holds them.
Then ``open`` is given the numbers replayed: the held frames go out after the replay, except
those the replay already carried; and for ``FILTER_S`` more (the records in flight when the
log was read arrive within it), a live frame whose number was replayed is dropped.

Pure: no I/O, no gevent. Numbers are read from push bodies (``seq``, added last by
``app/chat/events.py``) only for a subscription behind a gate.
"""

from __future__ import annotations

import json
import time
from typing import Callable

__all__ = ["ResumeGate", "seq_of", "FILTER_S"]

# How long after a replay live frames are checked against it.
FILTER_S = 60.0


def seq_of(body: bytes) -> int | None:
    """The ``seq`` of a push body, or None (a push without one, or not a JSON object)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    seq = decoded.get("seq") if isinstance(decoded, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


class ResumeGate:
    """Holds a resumed subscription's live frames until its replay is out, then filters them."""

    __slots__ = ("_held", "_replayed", "_until", "_monotonic")

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._held: list[tuple[bytes, bytes]] | None = []  # (body, frame) while replaying
        self._replayed: set[int] = set()
        self._until = 0.0
        self._monotonic = monotonic

    @property
    def expired(self) -> bool:
        """Whether the gate has nothing left to do (the fan-out then forgets it)."""
        return self._held is None and (not self._replayed or self._monotonic() > self._until)

    def admit(self, body: bytes, frame: bytes) -> bool:
        """Whether a live frame goes out now (False: held, or a repeat of the replay)."""
        if self._held is not None:
            self._held.append((body, frame))
            return False
        return self._fresh(body)

    def open(self, replayed: set[int]) -> list[bytes]:
        """The replay is out: the held frames that did not repeat it, in arrival order."""
        held, self._held = self._held or [], None
        self._replayed = set(replayed)
        self._until = self._monotonic() + FILTER_S
        return [frame for body, frame in held if self._fresh(body)]

    def _fresh(self, body: bytes) -> bool:
        if not self._replayed:
            return True
        seq = seq_of(body)
        if seq is None or seq not in self._replayed:
            return True
        self._replayed.discard(seq)
        return False
