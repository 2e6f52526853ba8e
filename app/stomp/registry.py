"""The subscription registry of one chat-server process: who receives which destination.

Owns two indexes kept consistent in one place, and nothing else (no I/O, no gevent)::

    _by_destination: {destination: {(subscriber, subscription_id): None}}
    _by_subscriber:  {subscriber: {subscription_id: destination}}

A *subscriber* is any hashable object standing for one connection (the transport uses its
``Session``); a subscription id is unique within its subscriber, as STOMP requires. One
subscriber may subscribe to the same destination under several ids and then receives one
copy per id. The inner dicts are insertion-ordered sets, so fan-out order is stable.
"""

from __future__ import annotations

from typing import Generic, Hashable, TypeVar

__all__ = ["SubscriptionRegistry", "DuplicateSubscription"]

S = TypeVar("S", bound=Hashable)


class DuplicateSubscription(ValueError):
    """The subscriber already holds a subscription with this id."""


class SubscriptionRegistry(Generic[S]):
    """Destination and subscriber indexes of the live subscriptions of this process."""

    def __init__(self) -> None:
        self._by_destination: dict[str, dict[tuple[S, str], None]] = {}
        self._by_subscriber: dict[S, dict[str, str]] = {}

    def add(self, subscriber: S, subscription_id: str, destination: str) -> None:
        """Record a subscription.

        Raises:
            DuplicateSubscription: ``subscriber`` already uses ``subscription_id``.
        """
        owned = self._by_subscriber.setdefault(subscriber, {})
        if subscription_id in owned:
            raise DuplicateSubscription(subscription_id)
        owned[subscription_id] = destination
        self._by_destination.setdefault(destination, {})[(subscriber, subscription_id)] = None

    def remove(self, subscriber: S, subscription_id: str) -> str | None:
        """Forget one subscription; returns its destination, or None if there was none."""
        owned = self._by_subscriber.get(subscriber)
        if owned is None or subscription_id not in owned:
            return None
        destination = owned.pop(subscription_id)
        if not owned:
            del self._by_subscriber[subscriber]
        self._unindex(destination, subscriber, subscription_id)
        return destination

    def remove_subscriber(self, subscriber: S) -> dict[str, str]:
        """Forget every subscription of ``subscriber``; returns them as {id: destination}."""
        owned = self._by_subscriber.pop(subscriber, {})
        for subscription_id, destination in owned.items():
            self._unindex(destination, subscriber, subscription_id)
        return owned

    def _unindex(self, destination: str, subscriber: S, subscription_id: str) -> None:
        members = self._by_destination[destination]
        del members[(subscriber, subscription_id)]
        if not members:  # empty destinations would otherwise accumulate forever
            del self._by_destination[destination]

    def subscribers(self, destination: str) -> tuple[tuple[S, str], ...]:
        """A snapshot of ``(subscriber, subscription_id)`` pairs for ``destination``.

        A snapshot, so callers may unsubscribe or drop subscribers while iterating it.
        """
        members = self._by_destination.get(destination)
        return tuple(members) if members else ()

    def subscriptions(self, subscriber: S) -> dict[str, str]:
        """A copy of ``subscriber``'s subscriptions as {id: destination}."""
        return dict(self._by_subscriber.get(subscriber, {}))

    def holds(self, subscriber: S, subscription_id: str) -> bool:
        """Whether ``subscriber`` holds a subscription with this id."""
        return subscription_id in self._by_subscriber.get(subscriber, ())

    def count(self, subscriber: S) -> int:
        """How many subscriptions ``subscriber`` holds."""
        return len(self._by_subscriber.get(subscriber, ()))

    def count_to(self, subscriber: S, destination: str) -> int:
        """How many of ``subscriber``'s subscriptions are to ``destination`` (a scan of its own)."""
        return sum(1 for owned in self._by_subscriber.get(subscriber, {}).values() if owned == destination)

    def destinations(self) -> list[str]:
        """Every destination with at least one subscriber."""
        return list(self._by_destination)

    def __len__(self) -> int:
        """The number of subscriptions held by all subscribers together."""
        return sum(len(owned) for owned in self._by_subscriber.values())
