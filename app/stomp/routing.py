"""Which destinations a client may SUBSCRIBE to and SEND to (protocol.md W-3, W-4).

Owns the rules, nothing else:

- SUBSCRIBE takes one exact room destination, ``/topic/(direct|group|community)/<id>``;
  patterns (``*``, ``**``, ``#``, ``>``) are refused, not expanded.
- Only the server publishes to ``/topic``: a client SEND there is refused.
- A SEND goes to the handler registered under exactly its destination, or is refused.

The grammar of destinations is app/destinations.py's. Each refusal raises an ``app.errors``
class with a fixed, short message for the ERROR frame.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from app.destinations import has_wildcard, is_server_topic, parse_topic
from app.errors import BadRequest, Forbidden, NotFound

__all__ = ["check_subscribe_destination", "resolve_send"]

H = TypeVar("H")


def check_subscribe_destination(destination: str) -> None:
    """Refuse anything but one exact room destination.

    Raises:
        BadRequest: a pattern, or a destination outside the room topics.
    """
    if has_wildcard(destination):
        raise BadRequest("wildcard destinations are not supported")
    if parse_topic(destination) is None:
        raise BadRequest("unknown destination")


def resolve_send(destination: str, handlers: Mapping[str, H]) -> H:
    """The handler registered under exactly ``destination``.

    Raises:
        Forbidden: the destination is under ``/topic`` (only the server publishes there).
        NotFound: no handler has this destination.
    """
    if is_server_topic(destination):
        raise Forbidden("only the server publishes to /topic")
    try:
        return handlers[destination]
    except KeyError:
        raise NotFound("unknown destination") from None
