"""Client acknowledgement of one connection: which subscriptions ack, and what is owed an ACK.

Owns :class:`AckLedger` (STOMP 1.2 "SUBSCRIBE ack Header", "ACK", "NACK"). A subscription
made with ``ack:client`` or ``ack:client-individual`` is recorded here; every MESSAGE the
fan-out (or a resume's replay) builds for it gets a fresh ack id from :meth:`delivered`,
which STOMP 1.2 frames carry in their ``ack`` header. An ACK or NACK must name an id that
was delivered and not acknowledged yet (:meth:`settle`), or it is refused.

What an ack means in Smooth: nothing beyond that check. Messages are not redelivered (a NACK
changes nothing either), and no read or delivery state is kept from acks: a client that
missed events resumes with ``since-seq``. ``auto`` subscriptions never appear here, so they
cost the fan-out nothing more.

The ids owed an ACK are bounded per connection (``MAX_UNACKED``): past it the oldest are
forgotten, since nothing would ever be redelivered (refusing new deliveries until the
client acks, as brokers with a prefetch limit do, would drop chat messages instead). An
ACK of a forgotten id is refused like any unknown id.

STOMP 1.0 and 1.1 have no ``ack`` header: their ACK names the MESSAGE's ``message-id`` (and,
in 1.1, its ``subscription``), which :meth:`settle_message` looks up.

Pure: no I/O, no gevent.
"""

from __future__ import annotations

import itertools
from typing import Callable

__all__ = ["AckLedger", "ACK_MODES", "AUTO", "CLIENT", "CLIENT_INDIVIDUAL", "MAX_UNACKED"]

AUTO = "auto"
CLIENT = "client"  # an ACK also acknowledges every earlier message of its subscription
CLIENT_INDIVIDUAL = "client-individual"  # an ACK acknowledges that one message
ACK_MODES = (AUTO, CLIENT, CLIENT_INDIVIDUAL)

# Ack ids one connection may owe before the oldest are forgotten.
MAX_UNACKED = 1024


class AckLedger:
    """The client-ack subscriptions of one connection and the ack ids they are owed.

    Args:
        forget_cached: called with a subscription id that becomes client-ack, so the fan-out
            drops any frame bytes it kept for an earlier ``auto`` subscription of that id.
        limit: the most ack ids owed at once.
    """

    __slots__ = ("modes", "_unacked", "_ids", "_forget_cached", "_limit")

    def __init__(self, forget_cached: Callable[[str], object] = lambda _: None, *, limit: int = MAX_UNACKED) -> None:
        self.modes: dict[str, str] = {}  # subscription id -> CLIENT | CLIENT_INDIVIDUAL (auto: absent)
        # ack id -> (subscription id, message id), oldest first
        self._unacked: dict[str, tuple[str, str]] = {}
        self._ids = itertools.count(1)
        self._forget_cached = forget_cached
        self._limit = limit

    def subscribe(self, subscription_id: str, mode: str) -> None:
        """Record a new subscription's ack mode (``auto`` records nothing)."""
        if mode == AUTO:
            return
        self.modes[subscription_id] = mode
        self._forget_cached(subscription_id)

    def unsubscribe(self, subscription_id: str) -> None:
        """Forget a subscription and the ids it was owed."""
        if self.modes.pop(subscription_id, None) is None:
            return
        self._unacked = {ack: owed for ack, owed in self._unacked.items() if owed[0] != subscription_id}

    def delivered(self, subscription_id: str, message_id: str) -> str:
        """A new ack id for a MESSAGE of a client-ack subscription, owed from now on."""
        ack_id = str(next(self._ids))
        unacked = self._unacked
        if len(unacked) >= self._limit:
            del unacked[next(iter(unacked))]
        unacked[ack_id] = (subscription_id, message_id)
        return ack_id

    def settle(self, ack_id: str) -> bool:
        """An ACK or NACK of ``ack_id``: whether it was owed (it is not any more)."""
        owed = self._unacked.pop(ack_id, None)
        if owed is None:
            return False
        if self.modes.get(owed[0]) == CLIENT:
            self._settle_earlier(owed[0], int(ack_id))
        return True

    def settle_message(self, message_id: str, subscription_id: str | None) -> bool:
        """STOMP 1.0/1.1: an ACK or NACK naming ``message_id`` (and 1.1's ``subscription``)."""
        for ack_id, (owner, delivered) in self._unacked.items():
            if delivered == message_id and (subscription_id is None or owner == subscription_id):
                return self.settle(ack_id)
        return False

    def _settle_earlier(self, subscription_id: str, below: int) -> None:
        # Ack ids are handed out in delivery order, so "earlier" is "a smaller number".
        earlier = [ack for ack, owed in self._unacked.items() if owed[0] == subscription_id and int(ack) < below]
        for ack in earlier:
            del self._unacked[ack]

    def __len__(self) -> int:
        """How many ack ids are owed."""
        return len(self._unacked)
