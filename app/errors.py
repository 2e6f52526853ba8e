"""The error hierarchy shared by every layer of Smooth.

::

    ChatServerError
    ├── ProtocolError            the peer broke a wire protocol (STOMP, SockJS, presence line)
    │   ├── FrameTooLarge        a STOMP frame, header block or header count over its limit
    │   ├── InvalidFrame         a frame that does not parse (bad escape, bad UTF-8, no command)
    │   └── NotConnected         a frame other than CONNECT before a successful CONNECT
    ├── AuthError                missing, malformed, forged or expired token; identity mismatch
    ├── Forbidden                authenticated, but not a member of the room / not the author
    ├── BadRequest               a payload or parameter that fails validation (names the field)
    ├── RateLimited              a client sent more than its rate limit allows
    ├── RequestTimeout           a request body stalled: no byte for the body idle timeout (HTTP 408)
    ├── NotFound                 a message, file or destination that does not exist
    ├── HistoryReset             a catch-up from further back than the room's log keeps (HTTP 410)
    ├── BackendError             a dependency failed
    │   ├── BackendUnavailable   a dependency is down or timed out
    │   │   └── BacklogFull      too many stored events wait for the broker: new SENDs are refused
    │   └── ServiceRefused       another service answered 4xx (``status`` says which)

Each class carries ``wire_message``: the fixed, short text that may be sent to a client.
Handlers put ``wire_message`` (or the explicit message a raiser chose) on the wire, never
``str()`` of an unexpected exception, because internal details can be security-sensitive.
"""

from __future__ import annotations

__all__ = [
    "ChatServerError",
    "ProtocolError",
    "FrameTooLarge",
    "InvalidFrame",
    "NotConnected",
    "AuthError",
    "Forbidden",
    "BadRequest",
    "NotFound",
    "BackendError",
    "BackendUnavailable",
    "ServiceRefused",
    "BacklogFull",
    "RateLimited",
    "RequestTimeout",
]


class ChatServerError(Exception):
    """Root of every error Smooth raises on purpose."""

    wire_message = "internal error"
    http_status = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.wire_message)
        self.message = message or self.wire_message


class ProtocolError(ChatServerError):
    wire_message = "protocol error"
    http_status = 400


class FrameTooLarge(ProtocolError):
    wire_message = "frame too large"
    http_status = 413


class InvalidFrame(ProtocolError):
    wire_message = "invalid frame"


class NotConnected(ProtocolError):
    wire_message = "not connected"


class AuthError(ChatServerError):
    wire_message = "unauthorized"
    http_status = 401


class Forbidden(ChatServerError):
    wire_message = "forbidden"
    http_status = 403


class BadRequest(ChatServerError):
    wire_message = "bad request"
    http_status = 400


class RateLimited(ChatServerError):
    wire_message = "rate limit exceeded"
    http_status = 429


class RequestTimeout(ChatServerError):
    """A request body stopped arriving (``CHAT_BODY_IDLE_TIMEOUT_S`` without a byte)."""

    wire_message = "request body too slow"
    http_status = 408


class NotFound(ChatServerError):
    wire_message = "not found"
    http_status = 404


class HistoryReset(ChatServerError):
    """A catch-up asked for events the room's log no longer holds: reload history."""

    wire_message = "history reset: reload history"
    http_status = 410


class BackendError(ChatServerError):
    wire_message = "backend error"
    http_status = 503


class BackendUnavailable(BackendError):
    wire_message = "service unavailable"
    http_status = 503


class ServiceRefused(BackendError):
    """Another service (auth, community, notification) answered with a 4xx status."""

    wire_message = "service refused the request"

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status


class BacklogFull(BackendUnavailable):
    """This worker holds ``OUTBOX_MAX_BACKLOG`` stored events the broker has not taken yet."""

    wire_message = "delivery backlog full, try again later"
