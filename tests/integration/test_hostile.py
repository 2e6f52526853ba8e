"""Our own hostile-input suite (issue 14 item 9): each family of attack against the real servers.

One real gunicorn chat server (the real domain, on the embedded backends) and one real
presence server. Each family (STOMP, WebSocket, SockJS, JWT, HTTP, presence TCP) is sent by
"mallory" on connections of its own; each case asserts the *class* of the answer:

- ``error-open``: a STOMP ERROR naming the problem, and the connection stays usable;
- ``error-close``: a STOMP ERROR, then a close (with the WebSocket close code given);
- ``close``: a close code alone (the client was closing itself);
- an HTTP status with the JSON envelope, or a presence error line.

After each family a bystander, Bob, connected before it all, still receives a message Alice
sends afterwards, and both servers' ``/healthz`` answer 200.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import random
import socket
import struct
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

import jwt
import pytest
import websocket

from app.auth import mint_token
from app.composition import create_topics
from app.settings import DEV_JWT_SECRET
from app.stomp.frames import Frame
from tests.conftest import MS
from tests.support.chat import ChatClient, StompError, message_json, running_chat_server
from tests.support.presence import LineClient, http_json, presence_settings
from tests.support.processes import presence_server_process, wait_ready
from tests.support.rooms import set_room_members

WAIT = 10_000 * MS
READY_TIMEOUT_S = 90_000 * MS
SEND_LIMIT = 20
OUTBOX_FRAMES = 50
_IDS = itertools.count(random.randrange(10**6, 10**8) * 1000)
DEEP_JSON = b"[" * 30_000 + b"]" * 30_000


# -- servers and the bystander ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(embedded, log_dir) -> Iterator[Any]:
    settings = presence_settings(embedded, send_rate_limit=SEND_LIMIT, send_rate_window_s=3600.0,
                                 outbox_max_frames=OUTBOX_FRAMES, heartbeat_ms=10_000)
    create_topics(settings)
    presence = presence_server_process(settings, log_dir, name="presence-hostile").start()
    try:
        with running_chat_server(settings, log_dir, name="chat-hostile") as chat:
            wait_ready(chat.http_url, READY_TIMEOUT_S)
            yield type("Stack", (), dict(settings=settings, chat=chat,
                                         presence_http=f"http://127.0.0.1:{settings.presence_http_port}"))
    finally:
        presence.stop()


@pytest.fixture(scope="module")
def world(stack) -> Iterator[Any]:
    alice, bob, mallory, room = next(_IDS), next(_IDS), next(_IDS), next(_IDS)
    set_room_members(stack.settings.redis_url, room, [alice, bob, mallory])
    bob_client = ChatClient(stack.chat.ws_url, timeout=WAIT)
    bob_client.connect(mint_token(DEV_JWT_SECRET, bob))
    bob_client.subscribe(f"/topic/direct/{room}")
    yield type("World", (), dict(alice=alice, bob=bob_client, mallory=mallory, room=room))
    bob_client.close()


@pytest.fixture
def mallory(stack, world, token_for) -> Iterator[Callable[..., ChatClient]]:
    """``mallory(connect=True)``: a new connection of the attacker (CONNECTed unless told otherwise)."""
    clients: list[ChatClient] = []

    def open_client(connect: bool = True) -> ChatClient:
        client = ChatClient(stack.chat.ws_url, timeout=WAIT)
        clients.append(client)
        if connect:
            client.connect(token_for(world.mallory))
        return client

    yield open_client
    for client in clients:
        client.close()
    assert_others_unaffected(stack, world)


def assert_others_unaffected(stack: Any, world: Any) -> None:
    """Bob still gets what Alice sends now, and both servers are healthy."""
    content = f"still here {next(_IDS)}"
    with ChatClient(stack.chat.ws_url, timeout=WAIT) as alice:  # a SEND rate limit of its own each time
        alice.connect(mint_token(DEV_JWT_SECRET, world.alice))
        alice.send("/kafka/send-direct-message", {"channelId": world.room, "content": content})
    frame = world.bob.wait_for(lambda fr: fr.command == "MESSAGE" and message_json(fr).get("message") == content,
                               timeout=WAIT)
    assert message_json(frame)["type"] == "message"
    assert http_json(stack.chat.http_url + "/healthz") == (200, {"status": "ok"})
    assert http_json(stack.presence_http + "/healthz") == (200, {"status": "ok"})


# -- answer classes -------------------------------------------------------------------------------


def assert_error_open(client: ChatClient, message: str) -> None:
    """An ERROR saying ``message`` (a prefix), and the connection still answers a receipt."""
    error = client.wait_for(lambda fr: fr.command == "ERROR", timeout=WAIT)
    assert (error.header("message") or "").startswith(message), error
    assert client.disconnect().command == "RECEIPT"


def assert_error_close(client: ChatClient, message: str | None, code: int) -> None:
    """An ERROR (saying ``message`` when given), then the close with ``code``."""
    assert client.wait_closed(WAIT)
    errors = [fr for fr in client._pending if fr.command == "ERROR"]
    assert errors, "no ERROR before the close"
    if message is not None:
        assert errors[0].header("message") == message
    assert client.close_code == code


def assert_closed_with(client: ChatClient, code: int) -> None:
    assert client.wait_closed(WAIT)
    assert client.close_code == code
    assert not [fr for fr in client._pending if fr.command == "ERROR"]


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame (RFC 6455 5.2), any bits the test wants."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return header + mask + masked


def send_wire(client: ChatClient, data: bytes) -> None:
    client.ws.sock.sendall(data)


def http(url: str, data: bytes | None = None, *, method: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw)


def raw_http(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on a new socket; (status line, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if sep and length is not None and len(body) >= length:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


# -- STOMP ------------------------------------------------------------------------------------------


class TestStomp:
    def test_garbage_is_an_error_then_a_protocol_close(self, mallory):
        client = mallory()
        client.send_raw(b"HELLO\nx:y\n\n\x00")
        assert_error_close(client, None, 1002)

    def test_an_oversized_frame_is_an_error_then_1009(self, mallory, world):
        client = mallory()
        client.send_raw(Frame("SEND", (("destination", "/kafka/send-direct-message"),),
                              b"x" * 70_000).serialize())
        assert_error_close(client, "frame too large", 1009)

    def test_deeply_nested_json_is_malformed_json_and_the_connection_stays(self, mallory):
        client = mallory()
        client.send_frame(Frame("SEND", (("destination", "/kafka/send-direct-message"), ("receipt", "r")),
                                DEEP_JSON))
        assert_error_open(client, "body: malformed JSON")

    def test_a_fifth_subscription_to_one_room_is_refused(self, stack, mallory, world):
        client = mallory()
        destination = f"/topic/direct/{world.room}"
        for n in range(4):
            client.subscribe(destination, f"s{n}")
        with pytest.raises(StompError) as refused:
            client.subscribe(destination, "s4")
        assert refused.value.message == "too many subscriptions to this destination (at most 4)"
        content = f"count me {next(_IDS)}"
        with ChatClient(stack.chat.ws_url, timeout=WAIT) as alice:
            alice.connect(mint_token(DEV_JWT_SECRET, world.alice))
            alice.send("/kafka/send-direct-message", {"channelId": world.room, "content": content})
        copies = []
        with contextlib.suppress(TimeoutError):
            while True:  # everything that comes within a second of the first copy
                copies.append(client.receive_message(WAIT if not copies else 1000 * MS))
        mine = [fr for fr in copies if message_json(fr).get("message") == content]
        assert sorted(fr.header("subscription") for fr in mine) == ["s0", "s1", "s2", "s3"]  # never a fifth

    def test_a_kilobyte_subscription_id_is_refused(self, mallory, world):
        client = mallory()
        with pytest.raises(StompError) as refused:
            client.subscribe(f"/topic/direct/{world.room}", "i" * 7_900)
        assert refused.value.message.startswith("id: longer than")
        assert client.disconnect().command == "RECEIPT"

    def test_sends_past_the_rate_limit_get_an_error_and_the_connection_stays(self, mallory, world):
        client = mallory()
        body = json.dumps({"channelId": world.room, "content": "flood"}).encode()
        for n in range(SEND_LIMIT + 1):
            client.send_frame(Frame("SEND", (("destination", "/kafka/send-direct-message"), ("receipt", f"f{n}")),
                                    body))
        replies = [client.wait_for(lambda fr: fr.command in ("RECEIPT", "ERROR"), WAIT) for _ in range(SEND_LIMIT + 1)]
        assert [fr.command for fr in replies] == ["RECEIPT"] * SEND_LIMIT + ["ERROR"]
        assert replies[-1].header("message") == f"rate limit exceeded: at most {SEND_LIMIT} SENDs per 3600 s"
        assert replies[-1].header("receipt-id") == f"f{SEND_LIMIT}"
        client.subscribe(f"/topic/direct/{world.room}")  # still usable
        assert client.disconnect().command == "RECEIPT"

    def test_a_flood_of_pings_and_heart_beats_is_no_slow_consumer(self, mallory):
        client = mallory()
        pings = b"".join(ws_frame(0x9, b"p%d" % n) for n in range(3000))
        heart_beats = ws_frame(0x1, b"\n" * 3000)
        receipt = Frame("SUBSCRIBE", (("destination", f"/topic/direct/{next(_IDS)}"), ("id", "x"),
                                      ("receipt", "after-pings"))).serialize()
        send_wire(client, pings + heart_beats + ws_frame(0x1, receipt))  # one burst, nothing read meanwhile
        reply = client.wait_for(lambda fr: fr.command in ("RECEIPT", "ERROR"), WAIT)
        # The room does not exist, so the SUBSCRIBE may be refused; what matters is that it
        # was answered and the connection was not cut off as a slow consumer.
        assert reply.header("message") != "slow consumer" and reply.header("receipt-id") == "after-pings"
        assert client.disconnect().command == "RECEIPT"


# -- WebSocket --------------------------------------------------------------------------------------


class TestWebSocket:
    @pytest.mark.parametrize("wire", [
        ws_frame(0x1, b"\n", rsv=4),                       # RSV1 without an extension
        ws_frame(0x3, b"x"),                               # reserved data opcode
        ws_frame(0xB, b"x"),                               # reserved control opcode
        ws_frame(0x0, b"x"),                               # continuation without a start
        ws_frame(0x9, b"x", fin=False),                    # fragmented ping
        ws_frame(0x9, b"x" * 126),                         # control frame over 125 bytes
        ws_frame(0x1, b"CONN", fin=False) + ws_frame(0x1, b"ECT"),  # a new message inside a fragmented one
    ], ids=["rsv", "opcode-3", "opcode-11", "lone-continuation", "fragmented-ping", "big-ping", "interleaved"])
    def test_protocol_errors_get_an_error_then_1002(self, mallory, wire):
        client = mallory()
        send_wire(client, wire)
        assert_error_close(client, "websocket protocol error", 1002)

    @pytest.mark.parametrize("payload", [b"\x03", struct.pack("!H", 999), struct.pack("!H", 1005),
                                         struct.pack("!H", 1015), struct.pack("!H", 2000),
                                         struct.pack("!H", 1000) + b"\xff\xfe"],
                             ids=["one-byte", "999", "1005", "1015", "2000", "bad-utf8-reason"])
    def test_invalid_close_frames_are_answered_1002(self, mallory, payload):
        client = mallory()
        send_wire(client, ws_frame(0x8, payload))
        assert_closed_with(client, 1002)

    def test_a_valid_close_is_answered_1000(self, mallory):
        client = mallory()
        send_wire(client, ws_frame(0x8, struct.pack("!H", 1000) + b"bye"))
        assert_closed_with(client, 1000)


# -- SockJS -----------------------------------------------------------------------------------------


class TestSockJS:
    def test_nested_json_over_the_sockjs_websocket_cuts_the_connection(self, stack, mallory):
        """Broken SockJS framing on its WebSocket is cut without a word, as SockJS servers do
        (the SockJS protocol suite asks for it); deep nesting is broken framing too."""
        mallory(connect=False)  # only for the bystander check afterwards
        url = stack.chat.ws_url.replace("/my-chat/websocket", f"/my-chat/000/{next(_IDS)}/websocket")
        ws = websocket.create_connection(url, timeout=WAIT)
        try:
            assert ws.recv() == "o"
            ws.send(DEEP_JSON.decode())
            messages = []
            with pytest.raises(websocket.WebSocketConnectionClosedException):
                while True:
                    messages.append(ws.recv())
            assert messages in ([], [""]), messages  # nothing but the close
        finally:
            ws.close()

    def test_nested_json_over_xhr_send_is_refused(self, stack, mallory):
        mallory(connect=False)
        base = f"{stack.chat.http_url}/my-chat/000/{next(_IDS)}"
        with urllib.request.urlopen(urllib.request.Request(base + "/xhr", data=b"", method="POST"),
                                    timeout=WAIT) as opened:
            assert opened.read() == b"o\n"
        request = urllib.request.Request(base + "/xhr_send", data=DEEP_JSON, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=WAIT)
        assert refused.value.code == 500 and refused.value.read() == b"Broken JSON encoding."  # SockJS's answer


# -- JWT --------------------------------------------------------------------------------------------


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part(claims)}."


class TestJwt:
    @pytest.mark.parametrize("make_token", [
        lambda user: _unsigned({"id": user, "exp": int(time.time()) + 600}),
        lambda user: jwt.encode({"id": user, "exp": int(time.time()) + 600}, b"not the secret" * 4, algorithm="HS256"),
        lambda user: mint_token(DEV_JWT_SECRET, user, lifetime_s=-60),
        lambda user: "garbage",
        lambda user: "a.b.c" * 2000,
        lambda user: mint_token(DEV_JWT_SECRET, user)[:-4] + "AAAA",
    ], ids=["alg-none", "wrong-secret", "expired", "garbage", "long", "tampered-signature"])
    def test_bad_tokens_get_an_error_then_a_close(self, mallory, world, make_token):
        client = mallory(connect=False)
        with pytest.raises(StompError):
            client.connect(make_token(world.mallory))
        assert client.wait_closed(WAIT)


# -- HTTP -------------------------------------------------------------------------------------------


class TestHttp:
    def test_nested_json_is_malformed_json_on_the_chat_api(self, stack, mallory, world, token_for):
        mallory(connect=False)
        status, body = http(stack.chat.http_url + "/chat-server/message-count", DEEP_JSON, method="POST",
                            headers={"Authorization": f"Bearer {token_for(world.mallory)}",
                                     "Content-Type": "application/json"})
        assert (status, body) == (400, {"isSuccess": False, "code": 400, "message": "body: malformed JSON"})

    def test_nested_json_is_malformed_json_on_the_presence_callbacks(self, stack, mallory):
        mallory(connect=False)
        status, body = http(stack.chat.http_url + "/chat-server/presence-offline", DEEP_JSON, method="POST",
                            headers={"X-Service-Token": stack.settings.service_token})
        assert status in (400, 401, 403) and body["isSuccess"] is False  # refused either way, in the envelope
        if status == 400:
            assert body["message"] == "body: malformed JSON"

    @pytest.mark.parametrize("body, status, message", [
        (DEEP_JSON, 400, "body: malformed JSON"),
        (b"[" + b"1," * 70_000 + b"1]", 413, "payload too large"),
        (b"not json", 400, "body: malformed JSON"),
    ])
    def test_presence_friends_state_answers_in_the_envelope(self, stack, mallory, body, status, message):
        mallory(connect=False)
        assert http(stack.presence_http + "/presence-server/friends-state", body, method="POST",
                    headers={"Content-Type": "application/json"}) == \
            (status, {"isSuccess": False, "code": status, "message": message})

    @pytest.mark.parametrize("server, path, method, status", [
        ("chat", "/no/such/path", "GET", 404), ("chat", "/healthz", "DELETE", 405),
        ("presence", "/no/such/path", "GET", 404), ("presence", "/healthz", "DELETE", 405),
    ])
    def test_every_http_error_uses_the_envelope(self, stack, mallory, server, path, method, status):
        mallory(connect=False)
        base = stack.chat.http_url if server == "chat" else stack.presence_http
        code, body = http(base + path, method=method)
        assert code == status and body["isSuccess"] is False and body["code"] == status

    @pytest.mark.parametrize("version, headers, status, message", [
        (b"HTTP/1.0", b"Sec-WebSocket-Version: 13\r\n", b"400", "websocket upgrade needs HTTP/1.1"),
        (b"HTTP/1.1", b"", b"426", "missing Sec-WebSocket-Version"),
    ])
    def test_malformed_upgrades_get_a_json_answer(self, stack, mallory, version, headers, status, message):
        mallory(connect=False)
        request = (b"GET /my-chat/websocket " + version + b"\r\nHost: x\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + headers + b"\r\n")
        line, body = raw_http(stack.settings.chat_http_port, request)
        assert line.split(b" ")[1] == status
        assert json.loads(body) == {"isSuccess": False, "code": int(status), "message": message}
        logged = stack.chat.process.log_tail(400)
        refused = f"websocket upgrade refused ({int(status)} 127.0.0.1): {message}"
        assert refused in logged and "Traceback" not in logged[logged.rindex(refused):]  # one line, no trace


# -- presence TCP -----------------------------------------------------------------------------------


class TestPresenceTcp:
    @pytest.mark.parametrize("line", [
        b"garbage", b"{" * 30_000 + b"}" * 30_000, b"[" * 30_000, b"{type='login', session_id=" + b"'" * 5000,
        b"\xff\xfe\xfd", b'{"type":"login","session_id":' + b"[" * 10_000 + b"1" + b"]" * 10_000 + b"}",
    ], ids=["garbage", "nested-objects", "open-arrays", "pseudo-json-quotes", "not-utf8", "nested-field"])
    def test_bad_lines_get_an_error_line_and_the_connection_stays(self, stack, mallory, line):
        mallory(connect=False)
        client = LineClient(stack.settings.presence_tcp_port, timeout=WAIT)
        try:
            reply = client.request(line)
            assert reply.startswith(b"ERROR ") or reply.startswith(b'{"ok":false'), reply
            user = next(_IDS)
            assert client.json(type="login", session_id=f"h{user}", user_id=user)["ok"] is True
            assert client.json(type="logout", session_id=f"h{user}")["ok"] is True
        finally:
            client.close()
