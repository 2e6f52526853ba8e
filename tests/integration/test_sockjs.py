"""SockJS 0.3 at /my-chat, spoken by hand over real sockets (protocol.md 2.1).

Covers the info/iframe/welcome pages, CORS, session-id validation, the WebSocket transport
and the HTTP transports (xhr polling, xhr_send, xhr_streaming, eventsource, htmlfile),
SockJS heart-beats, the disconnect delay and the streaming byte limit, all carrying STOMP.
What the SockJS protocol suite checks of the transport itself (jsonp, CORS, closed and
interrupted sessions, paths, HTTP/1.0) is in test_sockjs_conformance.py; the JS clients'
end-to-end runs are in test_js_clients.py and test_sockjs_browser.py.
"""

import http.client
import json
import time
import urllib.parse

import gevent
import pytest
import websocket

from app.composition import SOCKJS_CLIENT_FILE
from app.stomp.frames import SERVER_COMMANDS, Frame
from app.stomp.parser import FrameParser
from tests.conftest import MS

WAIT = 5000 * MS


@pytest.fixture
def server_settings():
    """No STOMP heart-beats; SockJS heart-beats at the SockJS default of 25 s."""
    return {"heartbeat_ms": 0, "sockjs_heartbeat_s": 25.0}


def connect_frame(token, **extra):
    headers = {"accept-version": "1.1,1.2", "heart-beat": "0,0", "access-token": token, **extra}
    return Frame("CONNECT", tuple(headers.items())).serialize()


def frame(command, body=b"", **headers):
    return Frame(command, tuple((k.replace("_", "-"), v) for k, v in headers.items()), body).serialize()


def stomp_frames(messages):
    """Parse the STOMP frames carried by SockJS message strings."""
    parser = FrameParser(max_frame_bytes=1 << 24, max_header_lines=100, max_header_bytes=1 << 20,
                         accepted_commands=SERVER_COMMANDS)
    for message in messages:
        parser.receive_data(message.encode("utf-8"))
    return [event for event in parser.events_received() if isinstance(event, Frame)]


class Http:
    """Plain HTTP requests to the in-process server."""

    def __init__(self, server):
        parsed = urllib.parse.urlsplit(server.http_url)
        self.host, self.port = parsed.hostname, parsed.port

    def request(self, method, path, body=None, headers=None, timeout=WAIT):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, conn

    def fetch(self, method, path, body=None, headers=None, timeout=WAIT):
        response, conn = self.request(method, path, body, headers, timeout)
        try:
            return response.status, response.headers, response.read()
        finally:
            conn.close()


def wait_receiver_attached(server, session_id):
    """Return once a request is attached as the HTTP session's receiver (a poll is waiting)."""
    deadline = time.monotonic() + WAIT
    while True:
        http = server.chat.endpoint.http_session(session_id)
        if http is not None and http.receiver is not None:
            return
        assert time.monotonic() < deadline, f"no receiver attached to {session_id}"
        gevent.sleep(0.01)


class XhrSession:
    """A SockJS session over xhr polling + xhr_send, by hand."""

    def __init__(self, server, session_id="s1", server_id="000"):
        self.http = Http(server)
        self.base = f"/my-chat/{server_id}/{session_id}"

    def poll(self, timeout=WAIT):
        status, _, body = self.http.fetch("POST", self.base + "/xhr", timeout=timeout)
        assert status == 200
        return body

    def send(self, *stomp):
        return self.http.fetch("POST", self.base + "/xhr_send", json.dumps([s.decode() for s in stomp]).encode())

    def messages(self, timeout=WAIT):
        """Poll until an ``a`` frame arrives; its messages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.poll()
            if body.startswith(b"a"):
                return json.loads(body[1:])
            assert body in (b"h\n",), body
        raise TimeoutError("no messages")


class TestPages:
    def test_welcome(self, server):
        status, headers, body = Http(server).fetch("GET", "/my-chat")
        assert (status, body) == (200, b"Welcome to SockJS!\n")
        assert Http(server).fetch("GET", "/my-chat/")[2] == b"Welcome to SockJS!\n"

    def test_info_advertises_websocket_and_reflects_origin(self, server):
        status, headers, body = Http(server).fetch("GET", "/my-chat/info", headers={"Origin": "https://web.example"})
        info = json.loads(body)
        assert status == 200
        assert info["websocket"] is True and info["cookie_needed"] is True and info["origins"] == ["*:*"]
        assert isinstance(info["entropy"], int)
        assert headers["Access-Control-Allow-Origin"] == "https://web.example"
        assert headers["Access-Control-Allow-Credentials"] == "true"
        assert "no-store" in headers["Cache-Control"]

    def test_preflight(self, server):
        status, headers, _ = Http(server).fetch("OPTIONS", "/my-chat/000/abc/xhr_send", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Headers": "content-type"})
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "content-type"
        status, headers, _ = Http(server).fetch("OPTIONS", "/my-chat/info", headers={"Origin": "http://a.b"})
        assert status == 204 and "GET" in headers["Access-Control-Allow-Methods"]

    def test_iframe_is_cacheable(self, server):
        status, headers, body = Http(server).fetch("GET", "/my-chat/iframe.html")
        assert status == 200 and b"SockJS.bootstrap_iframe()" in body
        assert Http(server).fetch("GET", "/my-chat/iframe-1.6.1.html")[0] == 200
        status, _, _ = Http(server).fetch("GET", "/my-chat/iframe.html", headers={"If-None-Match": headers["ETag"]})
        assert status == 304

    @pytest.mark.parametrize("path", ["/my-chat/000/" + "a" * 129 + "/xhr", "/my-chat/000/a.b/xhr",
                                      "/my-chat/0.0/abc/xhr", "/my-chat/000/a%0Ab/xhr",
                                      "/my-chat/000/abc/nope", "/my-chat/nope.html"])
    def test_bad_ids_and_unknown_paths_are_404(self, server, path):
        assert Http(server).fetch("POST" if path.endswith("xhr") else "GET", path)[0] == 404


class TestSettings:
    def test_jsonp_can_be_turned_off(self, start_server):
        on, off = Http(start_server()), Http(start_server(sockjs_jsonp="off"))
        assert on.fetch("GET", "/my-chat/000/j1/jsonp?c=cb")[2] == b'/**/cb("o");\r\n'
        assert off.fetch("GET", "/my-chat/000/j1/jsonp?c=cb")[0] == 404
        assert off.fetch("POST", "/my-chat/000/j1/jsonp_send", b"d=%5B%5D")[0] == 404

    def test_only_allowed_origins_are_served(self, start_server, token_for):
        server = start_server(sockjs_allowed_origins="https://app.example, null")
        http_ = Http(server)
        for origin in ("https://app.example", "null"):
            status, headers, _ = http_.fetch("GET", "/my-chat/info", headers={"Origin": origin})
            assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
        assert http_.fetch("GET", "/my-chat/info")[0] == 200  # no Origin: not a cross-origin browser request
        status, headers, _ = http_.fetch("POST", "/my-chat/000/o1/xhr", headers={"Origin": "https://evil.example"})
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        url = server.sockjs_url.replace("http://", "ws://") + "/000/o2/websocket"
        refused = websocket.create_connection(url, timeout=WAIT, origin="https://evil.example")
        try:
            opcode, frame = refused.recv_data_frame(control_frame=True)
            assert (opcode, frame.data[:2]) == (websocket.ABNF.OPCODE_CLOSE, b"\x03\xf0")  # 1008, nothing else
        finally:
            refused.close()
        allowed = websocket.create_connection(url, timeout=WAIT, origin="https://app.example")
        try:
            assert allowed.recv() == "o"
        finally:
            allowed.close()

    def test_the_server_serves_its_own_sockjs_client(self, server):
        http_ = Http(server)
        page = http_.fetch("GET", "/my-chat/iframe.html")[2].decode()
        url = page.split('<script src="', 1)[1].split('"', 1)[0]
        assert url.startswith("/static/sockjs.min.js?v=")
        status, headers, script = http_.fetch("GET", url)
        assert status == 200 and headers["Content-Type"].startswith("application/javascript")
        assert script == SOCKJS_CLIENT_FILE.read_bytes()
        assert "max-age=31536000" in headers["Cache-Control"]

    def test_a_setting_points_iframe_html_elsewhere(self, start_server):
        http_ = Http(start_server(sockjs_client_url="https://cdn.example/sockjs.min.js"))
        assert b'<script src="https://cdn.example/sockjs.min.js">' in http_.fetch("GET", "/my-chat/iframe.html")[2]


class TestWebSocketTransport:
    def open(self, server, session_id="ws1"):
        url = server.sockjs_url.replace("http://", "ws://") + f"/000/{session_id}/websocket"
        return websocket.create_connection(url, timeout=WAIT)

    def test_stomp_over_sockjs_websocket(self, server, application, token_for):
        ws = self.open(server, "client-chosen_1")
        try:
            assert ws.recv() == "o"
            ws.send(json.dumps([connect_frame(token_for(5)).decode()]))
            connected = stomp_frames(json.loads(ws.recv()[1:]))[0]
            assert connected.command == "CONNECTED"
            assert connected.header("session") == "client-chosen_1"  # the SockJS session segment
            ws.send(json.dumps([frame("SUBSCRIBE", destination="/topic/group/3", id="0").decode(),
                                frame("SEND", b'{"destination":"/topic/group/3","body":"\\u00e9t\\u00e9\\u0000"}',
                                      destination="/kafka/publish", receipt="p").decode()]))
            received = []
            while len(received) < 2:
                received += stomp_frames(json.loads(ws.recv()[1:]))
            by_command = {fr.command: fr for fr in received}
            assert by_command["MESSAGE"].body == "été\x00".encode("utf-8")
            assert by_command["RECEIPT"].header("receipt-id") == "p"
            ws.send(json.dumps([frame("DISCONNECT", receipt="bye").decode()]))
            assert stomp_frames(json.loads(ws.recv()[1:]))[0].header("receipt-id") == "bye"
            assert ws.recv() == 'c[3000,"Go away!"]'
        finally:
            ws.close()
        assert application.wait_disconnected("client-chosen_1", WAIT).user_id == 5

    def test_sockjs_heartbeat_frames(self, start_server):
        server = start_server(sockjs_heartbeat_s=0.1)
        ws = self.open(server)
        try:
            assert ws.recv() == "o"
            assert ws.recv() == "h"
            assert ws.recv() == "h"
        finally:
            ws.close()

    def test_broken_json_cuts_the_connection(self, server, application, token_for):
        ws = self.open(server, "broken")
        try:
            assert ws.recv() == "o"
            ws.send(json.dumps([connect_frame(token_for(5)).decode()]))
            assert stomp_frames(json.loads(ws.recv()[1:]))[0].command == "CONNECTED"
            ws.send("[not json")
            ws.settimeout(WAIT)
            # No STOMP ERROR, no close frame: the TCP connection just ends (as SockJS servers do).
            with pytest.raises(websocket.WebSocketConnectionClosedException):
                ws.recv()
        finally:
            ws.close()
        application.wait_disconnected("broken", WAIT)

    @pytest.mark.parametrize("path", ["/my-chat/000/a.b/websocket", "/my-chat/000/" + "x" * 129 + "/websocket",
                                      "/my-chat/websocket/extra", "/elsewhere"])
    def test_upgrade_of_a_bad_path_is_404_not_101(self, server, path):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(server.http_url.replace("http://", "ws://") + path, timeout=WAIT)
        assert refused.value.status_code == 404

    def test_two_websockets_may_share_a_session_id(self, server, application, token_for):
        """A SockJS WebSocket session lives as long as its connection; the id may be reused."""
        first, second = self.open(server, "shared"), self.open(server, "shared")
        try:
            for ws, user in ((first, 5), (second, 6)):
                assert ws.recv() == "o"
                ws.send(json.dumps([connect_frame(token_for(user)).decode()]))
                assert stomp_frames(json.loads(ws.recv()[1:]))[0].command == "CONNECTED"
            assert sorted(c.user_id for c in application.connections) == [5, 6]
            assert len({c.session_id for c in application.connections}) == 2
        finally:
            first.close()
            second.close()


class TestXhrTransports:
    def test_xhr_polling_session(self, server, application, token_for):
        xhr = XhrSession(server, "poll-1")
        assert xhr.poll() == b"o\n"
        assert xhr.send(connect_frame(token_for(8)))[0] == 204
        connected = stomp_frames(xhr.messages())[0]
        assert (connected.command, connected.header("session")) == ("CONNECTED", "poll-1")
        xhr.send(frame("SEND", b"via xhr", destination="/kafka/echo", receipt="1"))
        assert stomp_frames(xhr.messages())[0].header("receipt-id") == "1"
        assert application.received == [(8, b"via xhr")]
        assert application.connections[0].transport == "xhr-polling"
        xhr.send(frame("DISCONNECT", receipt="bye"))
        assert stomp_frames(xhr.messages())[0].header("receipt-id") == "bye"
        assert xhr.poll() == b'c[3000,"Go away!"]\n'
        application.wait_disconnected("poll-1", WAIT)

    def test_idle_poll_gets_a_heartbeat(self, start_server):
        server = start_server(sockjs_heartbeat_s=0.1)
        xhr = XhrSession(server)
        assert xhr.poll() == b"o\n"
        assert xhr.poll() == b"h\n"

    def test_xhr_send_errors(self, server, token_for):
        xhr = XhrSession(server, "errs")
        assert xhr.http.fetch("POST", "/my-chat/000/unknown/xhr_send", b'["x"]')[0] == 404
        xhr.poll()
        assert xhr.http.fetch("POST", xhr.base + "/xhr_send", b"")[0] == 500
        status, _, body = xhr.http.fetch("POST", xhr.base + "/xhr_send", b"[nope")
        assert (status, body) == (500, b"Broken JSON encoding.")

    def test_oversized_xhr_send_closes_the_session(self, start_server, token_for):
        server = start_server(stomp_max_frame_bytes=1024)
        xhr = XhrSession(server, "big")
        xhr.poll()
        xhr.send(connect_frame(token_for(5)))
        stomp_frames(xhr.messages())
        assert xhr.send(frame("SEND", b"z" * 20_000, destination="/kafka/echo"))[0] == 413
        error = stomp_frames(xhr.messages())[0]
        assert (error.command, error.header("message")) == ("ERROR", "frame too large")
        assert xhr.poll() == b'c[3000,"Go away!"]\n'

    def test_second_receiver_is_refused(self, start_server, token_for):
        server = start_server(sockjs_heartbeat_s=2.0)
        xhr = XhrSession(server, "dup")
        xhr.poll()
        waiting = gevent.spawn(xhr.poll)
        wait_receiver_attached(server, "dup")
        assert xhr.poll() == b'c[2010,"Another connection still open"]\n'
        xhr.send(connect_frame(token_for(5)))
        assert waiting.get(timeout=WAIT).startswith(b"a[")

    def test_session_without_receiver_ends_after_disconnect_delay(self, start_server, application, token_for):
        server = start_server(sockjs_disconnect_delay_s=0.3)
        xhr = XhrSession(server, "gone")
        xhr.poll()
        xhr.send(connect_frame(token_for(5)))
        stomp_frames(xhr.messages())
        application.wait_disconnected("gone", WAIT)
        assert xhr.http.fetch("POST", xhr.base + "/xhr_send", b'["\\n"]')[0] == 404

    def test_xhr_streaming_and_its_byte_limit(self, start_server, token_for):
        server = start_server(sockjs_streaming_bytes=1024)
        http_ = Http(server)
        response, conn = http_.request("POST", "/my-chat/000/str/xhr_streaming")
        try:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/javascript")
            assert response.readline() == b"h" * 2048 + b"\n"
            assert response.readline() == b"o\n"
            xhr = XhrSession(server, "str")
            xhr.send(connect_frame(token_for(5)), frame("SUBSCRIBE", destination="/topic/group/1", id="0"))
            assert stomp_frames(json.loads(response.readline()[1:]))[0].command == "CONNECTED"
            payload = json.dumps({"destination": "/topic/group/1", "body": "m" * 600}).encode()
            for _ in range(2):
                xhr.send(frame("SEND", payload, destination="/kafka/publish"))
            lines = response.read().split(b"\n")  # the response ends once 1024 bytes went out
            frames = stomp_frames([m for line in lines if line.startswith(b"a") for m in json.loads(line[1:])])
            assert [fr.command for fr in frames] == ["MESSAGE", "MESSAGE"]
        finally:
            conn.close()
        # The client reopens the stream on the same session and the session goes on.
        response, conn = http_.request("POST", "/my-chat/000/str/xhr_streaming")
        try:
            assert response.readline() == b"h" * 2048 + b"\n"
            xhr.send(frame("SEND", payload, destination="/kafka/publish"))
            assert stomp_frames(json.loads(response.readline()[1:]))[0].command == "MESSAGE"
        finally:
            conn.close()

    def test_eventsource(self, server, token_for):
        response, conn = Http(server).request("GET", "/my-chat/000/es/eventsource")
        try:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.readline() == b"\r\n"
            assert response.readline() == b"data: o\r\n"
            assert response.readline() == b"\r\n"
            XhrSession(server, "es").send(connect_frame(token_for(5)))
            line = response.readline()
            assert line.startswith(b"data: a[")
            assert stomp_frames(json.loads(line[len(b"data: a"):]))[0].command == "CONNECTED"
        finally:
            conn.close()

    def test_htmlfile(self, server, token_for):
        assert Http(server).fetch("GET", "/my-chat/000/hf/htmlfile")[0] == 500
        assert Http(server).fetch("GET", "/my-chat/000/hf/htmlfile?c=alert(1)")[0] == 500
        response, conn = Http(server).request("GET", "/my-chat/000/hf/htmlfile?c=cb_1")
        try:
            assert response.headers["Content-Type"].startswith("text/html")
            prelude = response.read1(4096)
            while b"p(\"o\")" not in prelude:
                prelude += response.read1(4096)
            assert b"var c = parent.cb_1;" in prelude
        finally:
            conn.close()
