"""STOMP heart-beat arithmetic (STOMP 1.2 "Heart-beating"), as pure functions.

Owns: reading the ``heart-beat`` header, agreeing the two intervals of a connection and
deciding whether a peer has been silent too long. Timers, clocks and sleeping belong to
the I/O layer, which passes the times in; nothing here reads a clock.
"""

from __future__ import annotations

import re

from app.errors import InvalidFrame

__all__ = ["parse_heart_beat", "negotiate_heartbeat", "is_overdue"]

# "cx,cy": two non-negative integers in milliseconds. Surrounding spaces are tolerated
# because some clients send "10000, 10000". The digit cap (about 31 years) keeps int()
# cheap and the numbers meaningful.
_HEART_BEAT = re.compile(r" *([0-9]{1,12}) *, *([0-9]{1,12}) *")


def parse_heart_beat(value: str | None) -> tuple[int, int]:
    """Read a ``heart-beat`` header value into ``(cx, cy)`` milliseconds.

    Args:
        value: the header value, or ``None`` when the frame has no such header.

    Returns:
        ``(0, 0)`` for an absent header (no heart-beats, as in STOMP 1.0), else the pair.

    Raises:
        InvalidFrame: the value is not two comma-separated non-negative integers.
    """
    if value is None:
        return (0, 0)
    match = _HEART_BEAT.fullmatch(value)
    if match is None:
        raise InvalidFrame("malformed heart-beat header")
    return (int(match.group(1)), int(match.group(2)))


def negotiate_heartbeat(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """Agree the intervals of one connection, seen from the server.

    Args:
        client: the CONNECT frame's ``(cx, cy)``: what the client can send, what it wants.
        server: the server's own ``(cx, cy)`` offer.

    Returns:
        ``(server_send_ms, server_expect_ms)``. The server sends every
        ``max(server.cx, client.cy)`` ms, and expects the client's data every
        ``max(client.cx, server.cy)`` ms; either is 0 (off) unless both sides want it.
    """
    client_can_send, client_wants = client
    server_can_send, server_wants = server
    send_ms = max(server_can_send, client_wants) if server_can_send and client_wants else 0
    expect_ms = max(client_can_send, server_wants) if client_can_send and server_wants else 0
    return (send_ms, expect_ms)


def is_overdue(last_activity: float, now: float, expect_ms: int, tolerance: float = 2.0) -> bool:
    """Whether a peer silent since ``last_activity`` has missed its heart-beats by ``now``.

    Args:
        last_activity: when anything (frame or EOL) last arrived, in seconds.
        now: the current time on the same clock, in seconds.
        expect_ms: the agreed interval; 0 means heart-beats are off and nothing is overdue.
        tolerance: how many intervals of silence to allow, since the spec asks for some
            leeway for network delays.
    """
    return expect_ms > 0 and now - last_activity > expect_ms * tolerance / 1000
