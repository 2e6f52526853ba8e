"""Local fan-out: one event to every subscriber of a destination in this process.

Owns :class:`FanoutDelivery`, the ``LocalDelivery`` the application's Kafka consumers call.
Per event: one registry lookup, one message id, and one :class:`MessageTemplate` per STOMP
version in use (the body is encoded once per event, not per subscriber). Per subscriber:
one dict lookup of the subscription id's escaped bytes (kept on the session, computed on
its first delivery), one ``bytes.join`` and one non-blocking ``Outbox.offer``; nothing here
waits on a socket and nothing is logged per delivery. A subscriber whose outbox is full is
closed as a slow consumer after the loop, so it never slows the others.
"""

from __future__ import annotations

import itertools
import uuid

from app.registry import SubscriptionRegistry
from app.session import Session
from app.stomp.frames import MessageTemplate

__all__ = ["FanoutDelivery", "SUBSCRIPTION_BYTES_MAX"]

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

    def deliver(self, destination: str, body: bytes) -> int:
        """Queue ``body`` as a MESSAGE to every local subscription of ``destination``.

        Returns how many subscriptions it was queued for (slow consumers not counted).
        """
        subscribers = self._registry.subscribers(destination)
        if not subscribers:
            return 0
        message_id = self._id_prefix + str(next(self._counter))
        templates: dict[str, MessageTemplate] = {}
        overflowed: list[Session] = []
        queued = 0
        for session, subscription_id in subscribers:
            template = templates.get(session.version)
            if template is None:
                template = templates[session.version] = MessageTemplate(
                    destination, message_id, body, version=session.version)
            cached = session.subscription_bytes
            subscription = cached.get(subscription_id)
            if subscription is None:
                if len(cached) >= SUBSCRIPTION_BYTES_MAX:
                    cached.clear()
                subscription = cached[subscription_id] = template.subscription_bytes(subscription_id)
            if session.outbox.offer(template.for_subscription_bytes(subscription)):
                queued += 1
            else:
                overflowed.append(session)
        for session in overflowed:
            session.close_slow_consumer()
        return queued
