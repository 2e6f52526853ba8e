"""Churn-and-hostile soak: the chat worker's RSS over rounds of connections and attacks.

Owns ``python -m bench soak``. Each round opens ``conns`` STOMP-over-WebSocket connections
that CONNECT, SUBSCRIBE to a DM room, SEND a message and close (the churn), then sends one
of each hostile input of tests/integration/test_hostile.py's families at the chat server:
garbage and oversized STOMP frames, deeply nested JSON, a fifth subscription to one room,
kilobyte subscription ids, SENDs past the rate limit, a ping flood, WebSocket protocol
errors and bad close codes, bad tokens, nested JSON over HTTP, HTTP/1.0 and malformed
upgrades, and requests cut short mid-header. After each round it samples the worker's RSS.
The point is the shape: it should level off (a high-water mark), not climb every round.
Not a test: nothing is asserted; the table and the raw figures are the result.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable

from app.auth import mint_token
from bench import procstat
from bench.report import table
from bench.servers import SmoothStack
from bench.wire import WsDecoder, handshake, stomp_frame, ws_frame

__all__ = ["run"]

COLUMNS = ["round", "connections", "hostile_inputs", "seconds", "worker_rss_mb", "growth_mb"]
DEEP_JSON = b"[" * 30_000 + b"]" * 30_000
ROOM = 4242
USERS = (9100, 9101)
SOCKET_TIMEOUT_S = 10.0
# The settings of the soaked server: a SEND limit low enough that the flood reaches it.
SEND_LIMIT = 30


def run(data_dir: Path, rounds: int, conns: int) -> dict[str, Any]:
    from app.backends.redis_cache import RedisMembershipCache

    with SmoothStack(data_dir, mongo_in_memory=True,
                     settings={"send_rate_limit": SEND_LIMIT, "send_rate_window_s": 60.0}).running() as stack:
        assert stack.settings is not None
        cache = RedisMembershipCache(stack.settings.redis_url, stack.settings.membership_ttl_s)
        cache.set_room_members(ROOM, list(USERS))
        cache.close()
        port, secret, worker = stack.chat_ports[0], stack.settings.jwt_secret, stack.worker_pids()[0]
        rows = []
        start_rss = procstat.rss_bytes(worker)
        for number in range(1, rounds + 1):
            began = time.monotonic()
            for n in range(conns):
                _churn(port, mint_token(secret, USERS[n % 2]))
            hostile = _hostile_round(port, mint_token(secret, USERS[0]))
            rss = procstat.rss_bytes(worker)
            rows.append({"round": number, "connections": conns, "hostile_inputs": hostile,
                         "seconds": round(time.monotonic() - began, 1), "worker_rss_mb": round(rss / 2**20, 1),
                         "growth_mb": round((rss - start_rss) / 2**20, 1)})
            print(table(f"soak round {number}", [rows[-1]], COLUMNS), flush=True)
    print(table("churn-and-hostile soak: chat worker RSS per round", rows, COLUMNS), flush=True)
    return {"rounds": rows, "start_rss_mb": round(start_rss / 2**20, 1),
            "last_half_growth_mb": round(rows[-1]["worker_rss_mb"] - rows[len(rows) // 2]["worker_rss_mb"], 1)
            if len(rows) > 1 else 0.0}


# -- one connection's life --------------------------------------------------------------------------


class _Conn:
    """A raw STOMP-over-WebSocket connection (blocking, bounded waits)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
        self.decoder = WsDecoder()
        self.decoder.feed(handshake(self.sock, "127.0.0.1", port, "/my-chat/websocket"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def stomp(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.send(ws_frame(stomp_frame(command, headers, body)))

    def until(self, predicate: Callable[[int, bytes], bool]) -> bool:
        """Read until a frame matches (True) or the server closes (False)."""
        pending = list(self.decoder.pending)
        self.decoder.pending = []
        while True:
            for opcode, payload in pending:
                if predicate(opcode, payload):
                    return True
                if opcode == 0x8:
                    return False
            data = self.sock.recv(65536)
            if not data:
                return False
            pending = self.decoder.feed(data)

    def connect(self, token: str) -> None:
        self.stomp("CONNECT", {"accept-version": "1.2", "host": "smooth", "heart-beat": "0,0", "access-token": token})
        self.until(lambda op, payload: payload.startswith(b"CONNECTED"))

    def receipt(self, receipt_id: str) -> None:
        self.until(lambda op, payload: receipt_id.encode() in payload and payload[:7] in (b"RECEIPT", b"ERROR\nm"))

    def closed(self) -> None:
        with contextlib.suppress(OSError):
            self.until(lambda op, payload: False)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _churn(port: int, token: str) -> None:
    conn = _Conn(port)
    try:
        conn.connect(token)
        conn.stomp("SUBSCRIBE", {"destination": f"/topic/direct/{ROOM}", "id": "s", "receipt": "sub"})
        conn.receipt("sub")
        body = json.dumps({"channelId": ROOM, "content": "soak"}).encode()
        conn.stomp("SEND", {"destination": "/kafka/send-direct-message", "receipt": "sent"}, body)
        conn.receipt("sent")
        conn.stomp("DISCONNECT", {"receipt": "bye"})
        conn.closed()
    finally:
        conn.close()


# -- the hostile inputs -----------------------------------------------------------------------------


def _hostile_round(port: int, token: str) -> int:
    attacks = [*_stomp_attacks(token), *_websocket_attacks(token), *_http_attacks()]
    failed = 0
    for attack in attacks:
        try:
            attack(port)
        except OSError:  # the server cut it short: an answer too, but count it
            failed += 1
    if failed:
        print(f"soak: {failed} of {len(attacks)} hostile inputs ended in a socket error", flush=True)
    return len(attacks)


def _on_connection(token: str | None, wire: bytes, *, receipt: str | None = None) -> Callable[[int], None]:
    def attack(port: int) -> None:
        conn = _Conn(port)
        try:
            if token is not None:
                conn.connect(token)
            conn.send(wire)
            if receipt is not None:
                conn.receipt(receipt)
                conn.stomp("DISCONNECT", {})
            conn.closed()
        finally:
            conn.close()
    return attack


def _stomp_attacks(token: str) -> list[Callable[[int], None]]:
    send = {"destination": "/kafka/send-direct-message"}
    flood = json.dumps({"channelId": ROOM, "content": "flood"}).encode()
    return [
        _on_connection(token, ws_frame(b"HELLO\nx:y\n\n\x00")),
        _on_connection(token, ws_frame(stomp_frame("SEND", send, b"x" * 70_000))),
        _on_connection(token, ws_frame(stomp_frame("SEND", {**send, "receipt": "deep"}, DEEP_JSON)), receipt="deep"),
        _on_connection(token, b"".join(ws_frame(stomp_frame("SUBSCRIBE", {"destination": f"/topic/direct/{ROOM}",
                                                                          "id": f"s{n}", "receipt": f"s{n}"}))
                                       for n in range(5)), receipt="s4"),
        _on_connection(token, ws_frame(stomp_frame("SUBSCRIBE", {"destination": f"/topic/direct/{ROOM}",
                                                                 "id": "i" * 7900, "receipt": "long"})), receipt="long"),
        _on_connection(token, b"".join(ws_frame(stomp_frame("SEND", {**send, "receipt": f"f{n}"}, flood))
                                       for n in range(SEND_LIMIT + 5)), receipt=f"f{SEND_LIMIT + 4}"),
        _on_connection(token, b"".join(ws_frame(b"p%d" % n, 0x9) for n in range(3000))
                       + ws_frame(stomp_frame("DISCONNECT", {"receipt": "pings"})), receipt="pings"),
        _on_connection(None, ws_frame(stomp_frame("CONNECT", {"accept-version": "1.2", "access-token": "a.b.c"}))),
    ]


def _raw_frame(first: int, payload: bytes) -> bytes:
    """A masked frame with any first byte (RSV bits, reserved opcodes, no FIN)."""
    return bytes([first]) + ws_frame(payload)[1:]


def _websocket_attacks(token: str) -> list[Callable[[int], None]]:
    wires = [_raw_frame(0xC1, b"\n"), _raw_frame(0x83, b"x"), _raw_frame(0x8B, b"x"), _raw_frame(0x80, b"x"),
             _raw_frame(0x09, b"x"), ws_frame(struct.pack("!H", 1005), 0x8), ws_frame(b"\x03", 0x8)]
    return [_on_connection(token, wire) for wire in wires]


def _http_attacks() -> list[Callable[[int], None]]:
    upgrade = (b"GET /my-chat/websocket HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    nested = (b"POST /chat-server/message-count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(DEEP_JSON)) + DEEP_JSON
    return [_http(upgrade), _http(nested), _http(b"GET /no/such HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            _half_sent(b"GET /my-chat/websocket HTTP/1.1\r\nHost: x\r\nUpg")]


def _http(request: bytes) -> Callable[[int], None]:
    def attack(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
            sock.sendall(request)
            while sock.recv(65536):
                pass
    return attack


def _half_sent(request: bytes) -> Callable[[int], None]:
    def attack(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
            sock.sendall(request)  # and hang up mid-header
    return attack
