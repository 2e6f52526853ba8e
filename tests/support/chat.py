"""Test helpers for the chat server: a raw STOMP-over-WebSocket client and running servers.

Public API (other test modules use these):

``ChatClient(url, *, timeout=5.0, subprotocols=STOMP_SUBPROTOCOLS, sockopt=())``
    A blocking STOMP client over a plain WebSocket (``websocket-client`` + our codec).
    ``url`` is ``ws://host:port/my-chat/websocket``. Frames that arrive while a helper
    waits for something else are kept, in order, for the next ``receive_*`` call.

    - ``connect(token=None, *, accept_version="1.2", heart_beat="0,0", headers=None) -> Frame``:
      CONNECT; returns CONNECTED, raises ``StompError`` on ERROR.
    - ``subscribe(destination, sub_id=None, *, receipt=True, headers=None) -> str``: the id;
      with ``receipt`` waits for the RECEIPT (``StompError`` on ERROR).
    - ``unsubscribe(sub_id, *, receipt=True) -> None``
    - ``send(destination, body=b"", *, receipt=True, headers=None) -> Frame | None``: body is
      bytes, str or a JSON-able dict/list; returns the RECEIPT (``StompError`` on ERROR).
    - ``disconnect(*, receipt=True) -> Frame | None``: the RECEIPT; the server then closes.
    - ``receive_frame(timeout=None) -> Frame``: the next frame (heart-beats are counted in
      ``heartbeats_received``, not returned); ``TimeoutError`` if none in time.
    - ``receive_message(timeout=None, destination=None) -> Frame``: the next MESSAGE
      (for ``destination``); ``message_json(frame)`` decodes its body.
    - ``wait_for(predicate, timeout=None) -> Frame``: the first frame matching ``predicate``.
    - ``wait_closed(timeout=None) -> bool``: read until the server closes (True) or time out.
    - ``send_frame(frame)``, ``send_raw(data, *, binary=False)``: raw input for bad-input tests.
    - ``close()``; also a context manager. ``subprotocol``: what the server echoed.

``StompError``: raised with ``.frame`` (the ERROR frame) when the server refused.

``RecordingApplication``: a ``ChatApplication`` double (SEND ``/kafka/echo`` records,
``/kafka/publish`` fans out ``{"destination", "body"}``, ``/kafka/refuse`` raises BadRequest,
``/kafka/crash`` raises RuntimeError, ``/kafka/sleep`` blocks; rooms ``666``/``404``
are refused on SUBSCRIBE) that records ``connected``/``disconnected`` calls.

``in_process_chat_server(settings, domain) -> InProcessChatServer``: a context manager
serving ``domain`` (a ``ChatDomain``, usually around a ``RecordingApplication``) with the
real transport (``app.composition.serve_chat_domain``) on a gevent ``WSGIServer`` in this
process (port 0).

``running_chat_server(settings, log_dir) -> RunningChatServer``: a context manager
running the real gunicorn (``gunicorn.conf.py``) as a child process until ``/healthz``
answers; stops it afterwards.

Both servers expose ``http_url``, ``ws_url`` (raw STOMP WebSocket) and ``sockjs_url``.

``run_js_client(**options) -> dict``: runs tests/js/stomp_roundtrip.js (@stomp/stompjs,
over ``ws`` or sockjs-client) in Node with the given options and returns its JSON result;
``run_js_script(script, **options)`` does the same for another script of tests/js (the
browser test's ``browser_sockjs.js``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import gevent
import websocket
from gevent import pywsgi

from app.composition import serve_chat_domain
from app.contracts import ChatDomain, ClientConnection, Resumed
from app.errors import BadRequest, Forbidden, NotFound
from app.settings import Settings
from app.stomp.fanout import FanoutDelivery
from app.stomp.frames import SERVER_COMMANDS, Frame
from app.stomp.parser import HEARTBEAT_EVENT, FrameParser
from app.stomp.registry import SubscriptionRegistry
from app.stomp.ws import STOMP_SUBPROTOCOLS, StompWebSocketHandler
from app.web import ChatServer
from tests.support.processes import REPO, ServiceProcess, chat_server_process

__all__ = [
    "client_opener",
    "ChatClient",
    "StompError",
    "message_json",
    "RecordingApplication",
    "InProcessChatServer",
    "in_process_chat_server",
    "RunningChatServer",
    "running_chat_server",
    "endpoint_urls",
    "raw_connection",
    "read_until_closed",
    "run_js_client",
    "run_js_script",
]

JS_DIR = REPO / "tests" / "js"
NODE_TIMEOUT_S = 60


class StompError(AssertionError):
    """The server answered with ERROR where the test expected success."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"ERROR {frame.header_dict()} {frame.body!r}")
        self.frame = frame

    @property
    def message(self) -> str | None:
        return self.frame.header("message")


def message_json(frame: Frame) -> Any:
    """The JSON body of a MESSAGE frame."""
    return json.loads(frame.body.decode("utf-8"))


class ChatClient:
    """A blocking raw-WebSocket STOMP client for tests (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float = 5.0, subprotocols: tuple[str, ...] = STOMP_SUBPROTOCOLS,
                 sockopt: tuple = ()) -> None:
        self.timeout = timeout
        self.ws = websocket.create_connection(url, timeout=timeout, subprotocols=list(subprotocols) or None,
                                              sockopt=sockopt, skip_utf8_validation=True,
                                              enable_multithread=False)
        self._parser = FrameParser(max_frame_bytes=1 << 26, max_header_lines=10_000, max_header_bytes=1 << 24,
                                   accepted_commands=SERVER_COMMANDS)
        self._pending: deque[Frame] = deque()
        self._ids = itertools.count()
        self.version = "1.2"
        self.heartbeats_received = 0
        self.closed = False
        self.close_code: int | None = None

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def subprotocol(self) -> str | None:
        return self.ws.getsubprotocol()

    # Sending -------------------------------------------------------------------------

    def send_raw(self, data: bytes | str, *, binary: bool = False) -> None:
        """Send one WebSocket message as is."""
        if binary:
            self.ws.send_binary(data if isinstance(data, bytes) else data.encode())
        else:
            self.ws.send(data.decode("utf-8") if isinstance(data, bytes) else data)

    def send_frame(self, frame: Frame) -> None:
        self.send_raw(frame.serialize(self.version))

    def connect(self, token: str | None = None, *, accept_version: str = "1.2", heart_beat: str = "0,0",
                headers: dict[str, str] | None = None) -> Frame:
        """CONNECT; returns CONNECTED or raises StompError."""
        values = {"accept-version": accept_version, "host": "smooth", "heart-beat": heart_beat}
        if token is not None:
            values["access-token"] = token
        values.update(headers or {})
        self.send_raw(Frame("CONNECT", tuple(values.items())).serialize("1.2"))
        reply = self.receive_frame()
        if reply.command != "CONNECTED":
            raise StompError(reply)
        self.version = reply.header("version") or "1.0"
        self._parser.version = self.version
        return reply

    def subscribe(self, destination: str, sub_id: str | None = None, *, receipt: bool = True,
                  headers: dict[str, str] | None = None) -> str:
        sub_id = sub_id if sub_id is not None else f"sub-{next(self._ids)}"
        self._request("SUBSCRIBE", {"destination": destination, "id": sub_id, **(headers or {})}, b"", receipt)
        return sub_id

    def unsubscribe(self, sub_id: str, *, receipt: bool = True) -> None:
        self._request("UNSUBSCRIBE", {"id": sub_id}, b"", receipt)

    def send(self, destination: str, body: bytes | str | dict | list = b"", *, receipt: bool = True,
             headers: dict[str, str] | None = None) -> Frame | None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = body.encode("utf-8") if isinstance(body, str) else body
        return self._request("SEND", {"destination": destination, **(headers or {})}, data, receipt)

    def disconnect(self, *, receipt: bool = True) -> Frame | None:
        return self._request("DISCONNECT", {}, b"", receipt)

    def _request(self, command: str, headers: dict[str, str], body: bytes, receipt: bool) -> Frame | None:
        receipt_id = f"r-{next(self._ids)}" if receipt else None
        if receipt_id is not None:
            headers = {**headers, "receipt": receipt_id}
        self.send_frame(Frame(command, tuple(headers.items()), body))
        return self.expect_receipt(receipt_id) if receipt_id is not None else None

    def expect_receipt(self, receipt_id: str, timeout: float | None = None) -> Frame:
        """The RECEIPT for ``receipt_id``; StompError if an ERROR answers it (or any ERROR comes)."""
        reply = self.wait_for(lambda fr: fr.command == "ERROR" or
                              (fr.command == "RECEIPT" and fr.header("receipt-id") == receipt_id), timeout)
        if reply.command == "ERROR":
            raise StompError(reply)
        return reply

    # Receiving -----------------------------------------------------------------------

    def receive_frame(self, timeout: float | None = None) -> Frame:
        """The next frame, kept or new; TimeoutError if none arrives in time."""
        if self._pending:
            return self._pending.popleft()
        return self._read_frame(time.monotonic() + (self.timeout if timeout is None else timeout))

    def receive_message(self, timeout: float | None = None, destination: str | None = None) -> Frame:
        return self.wait_for(lambda fr: fr.command == "MESSAGE" and
                             (destination is None or fr.header("destination") == destination), timeout)

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float | None = None) -> Frame:
        """The first frame matching ``predicate``; frames skipped are kept for later."""
        for index, frame in enumerate(self._pending):
            if predicate(frame):
                del self._pending[index]
                return frame
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skipped = []
        try:
            while True:
                frame = self._read_frame(deadline)
                if predicate(frame):
                    return frame
                skipped.append(frame)
        finally:
            self._pending.extend(skipped)

    def wait_heartbeats(self, count: int, timeout: float | None = None) -> None:
        """Read until ``count`` heart-beats in all have arrived (frames meanwhile are kept);
        TimeoutError if they do not arrive in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for event in self._parser.events_received():
                if event is HEARTBEAT_EVENT:
                    self.heartbeats_received += 1
                else:
                    self._pending.append(event)
            if self.heartbeats_received >= count:
                return
            self._parser.receive_data(self._recv_message(deadline))

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Read (keeping frames) until the server closes the connection; False on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        kept: list[Frame] = []  # not straight back into _pending: _read_frame takes from there first
        try:
            while not self.closed:
                kept.append(self._read_frame(deadline))
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        finally:
            self._pending.extend(kept)
        return True

    def _read_frame(self, deadline: float) -> Frame:
        while True:
            for event in self._parser.events_received():
                if event is HEARTBEAT_EVENT:
                    self.heartbeats_received += 1
                else:
                    self._pending.append(event)
            if self._pending:
                return self._pending.popleft()
            if self._parser.parser_exc is not None:
                raise AssertionError(f"server sent a malformed frame: {self._parser.parser_exc}")
            self._parser.receive_data(self._recv_message(deadline))

    def _recv_message(self, deadline: float) -> bytes:
        if self.closed:
            raise ConnectionError(f"connection closed (code {self.close_code})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame in time")
        self.ws.settimeout(remaining)
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError("no frame in time") from None
        except (websocket.WebSocketConnectionClosedException, OSError):
            self.closed = True
            raise ConnectionError("connection closed without a close frame") from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = True
            self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise ConnectionError(f"connection closed (code {self.close_code})")
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        self.closed = True


@dataclass
class RecordingApplication:
    """A ``ChatApplication`` double for transport tests (see the module docstring)."""

    delivery: Any = None
    received: list[tuple[int, bytes]] = field(default_factory=list)
    connections: list[ClientConnection] = field(default_factory=list)
    disconnections: list[ClientConnection] = field(default_factory=list)
    resumable: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)

    @property
    def send_handlers(self) -> dict[str, Callable[[ClientConnection, bytes, str | None], None]]:
        return {
            "/kafka/echo": self._echo,
            "/kafka/publish": self._publish,
            "/kafka/refuse": self._refuse,
            "/kafka/crash": self._crash,
            "/kafka/sleep": self._sleep,
        }

    def _echo(self, connection: ClientConnection, body: bytes, key: str | None = None) -> None:
        self.received.append((connection.user_id, body))

    def _publish(self, connection: ClientConnection, body: bytes, key: str | None = None) -> None:
        event = json.loads(body)
        self.delivery.deliver(event["destination"], event["body"].encode("utf-8"), event.get("seq"))

    def _refuse(self, connection: ClientConnection, body: bytes, key: str | None = None) -> None:
        raise BadRequest("refused by the application")

    def _crash(self, connection: ClientConnection, body: bytes, key: str | None = None) -> None:
        raise RuntimeError("internal detail that must not leak")

    def _sleep(self, connection: ClientConnection, body: bytes, key: str | None = None) -> None:
        gevent.sleep(float(body or b"0.2"))
        self.received.append((connection.user_id, b"slept"))

    def authorize_subscription(self, connection: ClientConnection, destination: str) -> None:
        room = destination.rsplit("/", 1)[-1]
        if room == "666":
            raise Forbidden("not a member")
        if room == "404":
            raise NotFound("no such room")

    def resume(self, connection: ClientConnection, destination: str, since_seq: int) -> Resumed:
        """Replays ``resumable[destination]`` after ``since_seq``; other destinations are not numbered."""
        if destination not in self.resumable:
            raise BadRequest("since-seq: not numbered")
        return Resumed([(seq, body) for seq, body in self.resumable[destination] if seq > since_seq])

    def connected(self, connection: ClientConnection) -> None:
        self.connections.append(connection)

    def disconnected(self, connection: ClientConnection) -> None:
        self.disconnections.append(connection)

    def wait_disconnected(self, session_id: str, timeout: float) -> ClientConnection:
        """The disconnected() call of ``session_id`` (the application's or the STOMP one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for connection in self.disconnections:
                if session_id in (connection.session_id, connection.stomp_session):
                    return connection
            gevent.sleep(0.02)
        raise AssertionError(f"no disconnected() for {session_id} in {timeout}s")


def endpoint_urls(port: int, host: str = "127.0.0.1") -> tuple[str, str, str]:
    """``(http_url, ws_url, sockjs_url)`` of a chat server on ``port``."""
    return (f"http://{host}:{port}", f"ws://{host}:{port}/my-chat/websocket", f"http://{host}:{port}/my-chat")


@dataclass
class InProcessChatServer:
    """A ChatServer served by gevent in this process (``app`` is ``chat``, the WSGI application)."""

    app: Any
    server: pywsgi.WSGIServer
    chat: ChatServer
    http_url: str
    ws_url: str
    sockjs_url: str


@contextlib.contextmanager
def in_process_chat_server(settings: Settings, domain: ChatDomain) -> Iterator[InProcessChatServer]:
    registry: SubscriptionRegistry = SubscriptionRegistry()
    chat = serve_chat_domain(settings, domain, registry=registry, delivery=FanoutDelivery(registry))
    server = pywsgi.WSGIServer(("127.0.0.1", 0), chat, handler_class=StompWebSocketHandler, log=None)
    server.start()
    try:
        yield InProcessChatServer(chat, server, chat, *endpoint_urls(server.server_port))
    finally:
        chat.drain()
        server.stop(timeout=5)


@dataclass
class RunningChatServer:
    """The real gunicorn chat server in a child process."""

    process: ServiceProcess
    http_url: str
    ws_url: str
    sockjs_url: str


@contextlib.contextmanager
def running_chat_server(settings: Settings, log_dir: Path, name: str = "chat",
                        ready_timeout: float = 60.0) -> Iterator[RunningChatServer]:
    """gunicorn as `make run` starts it, until ``/healthz`` answers; stopped afterwards."""
    process = chat_server_process(settings, log_dir, name).start()
    try:
        urls = endpoint_urls(settings.chat_http_port)
        _wait_http_ok(urls[0] + "/healthz", process, ready_timeout)
        yield RunningChatServer(process, *urls)
    finally:
        process.stop()


def raw_connection(server: RunningChatServer, timeout: float) -> socket.socket:
    """A plain TCP connection to ``server``'s HTTP port (for bytes no HTTP client would send)."""
    port = int(server.http_url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes without a byte)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _wait_http_ok(url: str, process: ServiceProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive:
            raise RuntimeError(f"{process.name} exited; log:\n{process.log_tail()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s; log:\n{process.log_tail()}")


def run_js_client(**options: Any) -> dict[str, Any]:
    """Run tests/js/stomp_roundtrip.js with ``options``; its JSON result (any exit status)."""
    return run_js_script("stomp_roundtrip.js", **options)


def run_js_script(script: str, *, node_timeout_s: float = NODE_TIMEOUT_S, **options: Any) -> dict[str, Any]:
    """Run ``script`` of tests/js with ``options`` (one JSON argument); its JSON result (any exit status)."""
    node = shutil.which("node")
    assert node, "Node is required for the JS client tests"
    assert (JS_DIR / "node_modules" / "@stomp" / "stompjs").exists(), "run `make test` (npm install) first"
    completed = subprocess.run([node, script, json.dumps(options)], cwd=JS_DIR,
                               capture_output=True, text=True, timeout=node_timeout_s)
    assert completed.stdout.strip(), f"no output; stderr:\n{completed.stderr}"
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["exit_status"] = completed.returncode
    return result


@contextlib.contextmanager
def client_opener(token_for: Callable[..., str], timeout: float) -> Iterator[Callable[[Any, int], ChatClient]]:
    """``open(server, user_id)``: a CONNECTed ``ChatClient``; every one is closed on exit."""
    clients: list[ChatClient] = []

    def open_client(server: Any, user_id: int) -> ChatClient:
        client = ChatClient(server.ws_url, timeout=timeout)
        clients.append(client)
        client.connect(token_for(user_id))
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            client.close()
