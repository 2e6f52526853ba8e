"""The seam between the STOMP transport and the chat application.

The transport (``app/stomp``) owns sockets, frames, heart-beats, receipts and the
subscription registry. The application (``app/chat``) owns what destinations mean. They
meet only through the types here:

- ``ClientConnection``: what the application may know about one authenticated connection.
- ``ChatApplication``: what the transport calls: connect/disconnect hooks, the SEND
  handlers keyed by exact destination, and the SUBSCRIBE authorizer.
- ``LocalDelivery``: what the application (its Kafka consumers) calls to push one
  pre-serialised event to every local subscriber of a destination.
- ``Services``: what the composition root (``app/wiring.py``) hands the web app and the
  worker lifecycle.

Handlers signal refusal by raising ``app.errors.ChatServerError`` subclasses; the transport
turns them into ERROR frames (with ``receipt-id`` when a receipt was asked for). A SEND
handler that returns None has done everything that must happen before a RECEIPT is sent.
One that returns a ``Pending`` has done the part that must happen in SEND order (for
example the store, and handing the record to the Kafka producer) and left the rest (the
broker's ack) in flight: the transport reads the connection's next frames meanwhile and
sends the RECEIPT only once ``Pending.wait()`` returned, or the ERROR if it raised; replies
still go out in frame order (app/stomp/inflight.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from app.auth import Principal

__all__ = ["ClientConnection", "Pending", "SendHandler", "ChatApplication", "LocalDelivery", "Services", "APP_PREFIX"]

APP_PREFIX = "/kafka/"


@dataclass(eq=False)
class ClientConnection:
    """One authenticated STOMP connection, as the application sees it.

    ``attributes`` is per-connection scratch space owned by the application (for
    example the last typing time per room); the transport never reads it.
    """

    session_id: str
    principal: Principal
    node_id: str
    transport: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def user_id(self) -> int:
        return self.principal.user_id


class Pending(Protocol):
    """The rest of a SEND that its handler started and did not wait for."""

    def wait(self) -> None:
        """Return once it succeeded; raise ``ChatServerError`` if it failed (after undoing).

        Called once, from the connection's acknowledger greenlet rather than the handler's,
        in SEND order. Must return or raise within a bounded time (the Kafka ack timeout).
        """
        ...


SendHandler = Callable[[ClientConnection, bytes], Pending | None]
"""Handles the body of a SEND to one exact ``/kafka/...`` destination; raises to refuse.

Returns None when done, or a ``Pending`` whose success the RECEIPT waits for.
"""


class ChatApplication(Protocol):
    """What the STOMP transport needs from the chat domain."""

    @property
    def send_handlers(self) -> Mapping[str, SendHandler]:
        """Exact destination (``/kafka/send-direct-message``) to handler."""
        ...

    def authorize_subscription(self, connection: ClientConnection, destination: str) -> None:
        """Raise ``Forbidden``/``NotFound``/``BadRequest`` unless the user may subscribe."""
        ...

    def connected(self, connection: ClientConnection) -> None:
        """After CONNECTED was queued. Must not raise for a dependency failure."""
        ...

    def disconnected(self, connection: ClientConnection) -> None:
        """Exactly once per connection that got ``connected``, however it ended."""
        ...


class LocalDelivery(Protocol):
    """Pushes an event to this process's subscribers; never blocks on a socket."""

    def deliver(self, destination: str, body: bytes) -> int:
        """Queue ``body`` as a MESSAGE to every local subscriber; returns how many."""
        ...


@dataclass
class Services:
    """Everything one chat-server process runs, built by ``app.wiring.build_services``.

    ``blueprints`` are Flask blueprints of the application's HTTP API. ``readiness`` maps a
    dependency name (``mongo``, ``redis``, ``kafka``) to a check that raises when it is down.
    ``start(delivery)`` starts the Kafka consumers and background tasks after the worker
    forked; ``stop()`` closes them (consumers must be closed, see field-notes.md).
    """

    application: ChatApplication
    blueprints: list[Any] = field(default_factory=list)
    readiness: dict[str, Callable[[], None]] = field(default_factory=dict)
    start: Callable[[LocalDelivery], None] = lambda delivery: None
    stop: Callable[[], None] = lambda: None
