"""JSON from untrusted peers: one decoder, one error, one depth bound (stdlib only).

Every route that reads JSON a client, a service or a presence peer sent (STOMP SEND bodies,
SockJS messages, the chat and presence HTTP APIs, presence lines) decodes it with
:func:`loads`, so each answers a hostile document the same way: :class:`MalformedJSON`,
which the routes turn into ``malformed JSON`` (STOMP ERROR, HTTP 400 in the JSON envelope,
presence ``malformed request``).

Why a depth bound of our own: CPython's decoder recurses once per nesting level and
raises ``RecursionError`` (not ``ValueError``) near the interpreter's recursion limit, which
callers did not expect (a 500, a dropped connection). That error is caught here, and a
decoded document nested deeper than ``MAX_DEPTH`` is refused as well, since no payload of
Smooth nests more than a few levels and code after us may recurse over it. The depth is
only walked when the document holds more brackets than ``MAX_DEPTH`` in all (two
``bytes.count`` calls), and the walk is over the decoded containers, never the text.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["MalformedJSON", "MAX_DEPTH", "MALFORMED_JSON", "loads"]

# The deepest nesting of arrays and objects accepted.
MAX_DEPTH: Final = 32
# The fixed text every route answers a document it cannot decode with.
MALFORMED_JSON: Final = "malformed JSON"


class MalformedJSON(ValueError):
    """Not JSON, not UTF-8, or nested deeper than ``MAX_DEPTH``."""

    def __init__(self) -> None:
        super().__init__(MALFORMED_JSON)


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` decoded as JSON (bytes must be UTF-8).

    Raises:
        MalformedJSON: whatever the reason the document cannot be decoded.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedJSON() from None
    if text.count("[") + text.count("{") > max_depth and _deeper_than(value, max_depth):
        raise MalformedJSON()
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
