"""Local fan-out: one event to every subscriber of a destination in this process.

Owns :class:`FanoutDelivery`, the ``LocalDelivery`` the application's Kafka consumers call.
Per event: one registry lookup, one message id, and one :class:`MessageTemplate` per STOMP
version in use (the body is encoded once per event, not per subscriber). Per subscriber:
one dict lookup of the subscription id's escaped bytes (kept on the session, computed on
its first delivery) and one ``bytes.join``; nothing here waits on a socket and nothing is
logged per delivery. Only a client-ack subscription (``ack:client`` or
``ack:client-individual``) costs more: its bytes are not kept, and each of its frames gets an
``ack`` header with an id the session's ``AckLedger`` records (app/stomp/acks.py).

Frames are not handed to the sessions one by one: ``deliver`` gathers them per session, and
``flush`` hands each session all of its frames with one ``Outbox.offer_many``: called by the
fan-out consumer once its poll batch is delivered, or else by a loop callback as soon as the
delivering greenlet yields. When Kafka returns several records in one fetch, a subscriber then
gets them in one write (one system call) instead of one each: the send system call is most
of the cost of a delivery (bench/FINDINGS.md). Each session's frames keep the order of the
``deliver`` calls. A subscriber whose outbox is full is closed as a slow consumer, and one
whose frame cannot be built (a subscription id that cannot be written in its STOMP version)
is closed with an ERROR, each from a greenlet of its own: neither stops delivery to the others.
An event with an audience (a channel's: its community's members, app/chat/channel_scope.py)
reaches only the subscribers whose user is in it: one set lookup per subscriber, in the
delivery loop, so events without one cost what they did.
A subscription being resumed (``SUBSCRIBE`` with ``since-seq``) has a gate: its frames go
through it (held during the replay, then checked against it for a while).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import Callable, Container

import gevent

from app.stomp.registry import SubscriptionRegistry
from app.stomp.session import Session
from app.stomp.frames import MessageTemplate

__all__ = ["FanoutDelivery", "SUBSCRIPTION_BYTES_MAX"]

log = logging.getLogger(__name__)

# Escaped subscription ids kept per session. Entries outlive UNSUBSCRIBE (they are never
# wrong: the bytes depend only on the id and the session's fixed version), so the cache
# is emptied when it reaches this size.
SUBSCRIPTION_BYTES_MAX = 64


class FanoutDelivery:
    """``LocalDelivery`` over this process's subscription registry."""

    def __init__(self, registry: SubscriptionRegistry[Session]) -> None:
        self._registry = registry
        # Unique across processes and restarts without coordination.
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._counter = itertools.count(1)
        self._gathered: dict[Session, list[bytes]] = {}  # frames owed, per session, until the flush

    def deliver(self, destination: str, body: bytes, seq: int | None = None,
                audience: Container[int] | None = None) -> int:
        """Owe ``body`` as a MESSAGE to every local subscription of ``destination``.

        With ``audience``, only to subscriptions whose session's user is in it (one
        membership test per subscriber, in the loop: no filtered copy of the list).
        The frames reach the sessions' outboxes when the calling greenlet next yields.
        Returns how many subscriptions they were addressed to.
        """
        subscribers = self._registry.subscribers(destination)
        if not subscribers:
            return 0
        message_id = self._id_prefix + str(next(self._counter))
        templates: dict[str, MessageTemplate] = {}
        gathered = self._gathered
        if not gathered:
            gevent.get_hub().loop.run_callback(self.flush)
        broken: list[Session] = []
        outside = 0
        for session, subscription_id in subscribers:
            if audience is not None and session.user_id not in audience:
                outside += 1
                continue
            try:
                template = templates.get(session.version)
                if template is None:
                    template = templates[session.version] = MessageTemplate(
                        destination, message_id, body, version=session.version)
                subscription = session.subscription_bytes.get(subscription_id)
                if subscription is not None:  # an auto subscription seen before: the common case
                    frame = template.for_subscription_bytes(subscription)
                else:
                    frame = _first_or_acked(session, template, subscription_id, message_id)
                if session.gates and not _through_gate(session, subscription_id, seq, frame):
                    continue
            except Exception:  # noqa: BLE001 - one subscriber's frame must not cost the others theirs
                log.exception("cannot build a MESSAGE for session %s", session.session_id)
                broken.append(session)
                continue
            owed = gathered.get(session)
            if owed is None:
                gathered[session] = [frame]
            else:
                owed.append(frame)
        if broken:
            gevent.spawn(_close_each, broken, lambda session: session.close_undeliverable())
        return len(subscribers) - outside

    def flush(self) -> None:
        """Hand every session the frames gathered for it (a loop callback; also safe to call directly)."""
        gathered, self._gathered = self._gathered, {}
        overflowed = []
        for session, frames in gathered.items():
            try:
                if not session.outbox.offer_many(frames):
                    overflowed.append(session)
            except Exception:  # noqa: BLE001 - in the hub: one session's failure must not cost the others
                log.exception("fan-out to session %s failed", session.session_id)
        if overflowed:
            gevent.spawn(_close_each, overflowed, lambda session: session.close_slow_consumer())


def _first_or_acked(session: Session, template: MessageTemplate, subscription_id: str, message_id: str) -> bytes:
    """The frame for a subscription whose bytes are not cached: a client-ack one (never cached,
    each frame gets an ack id, app/stomp/acks.py) or an auto one's first (its bytes are kept)."""
    acks = session.acks
    if subscription_id in acks.modes:
        subscription = template.subscription_bytes(subscription_id)
        return template.for_acked_subscription(subscription, acks.delivered(subscription_id, message_id))
    cached = session.subscription_bytes
    if len(cached) >= SUBSCRIPTION_BYTES_MAX:
        cached.clear()
    subscription = cached[subscription_id] = template.subscription_bytes(subscription_id)
    return template.for_subscription_bytes(subscription)


def _through_gate(session: Session, subscription_id: str, seq: int | None, frame: bytes) -> bool:
    """Whether a resumed subscription's gate lets ``frame`` out now (app/stomp/resume.py)."""
    gate = session.gates.get(subscription_id)
    return gate is None or gate.admit(seq, frame)


def _close_each(sessions: list[Session], close: Callable[[Session], None]) -> None:
    for session in sessions:
        try:
            close(session)
        except Exception:  # noqa: BLE001 - one failed close must not spare the others
            log.exception("could not close session %s", session.session_id)
