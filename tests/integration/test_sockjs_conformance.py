"""The SockJS protocol, as the official suite checks it, against tests/conformance/sockjs_server.py.

The suite itself (github sockjs/sockjs-protocol) is Python 2 and stays out of the project
(README "Conformance" says how to run it by hand); these are our own tests of each
behaviour it checks that the transport once got wrong, against the same four services
(``/echo``, ``/close``, ``/cookie_needed_echo``, ``/disabled_websocket_echo``), built from
the transport classes ``/my-chat`` uses, over real sockets.
"""

import http.client
import json
import socket
import struct
import subprocess
import sys
import time
import uuid

import gevent
import pytest
import websocket

from app.embedded import free_port
from app.stomp.sockjs import ABORT_CHECK_S
from tests.conformance import sockjs_server
from tests.conformance.sockjs_server import ConformanceServer, serve
from tests.conftest import MS

WAIT = 5000 * MS
NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"


class Services:
    """The four services on a free port, and plain HTTP to them."""

    def __init__(self, server, app: ConformanceServer):
        self.server = server
        self.app = app
        self.port = server.server_port

    def endpoint(self, prefix):
        return next(e for e in self.app.endpoints if e.blueprint.url_prefix == prefix)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        conn.request(method, path, body=body, headers=headers or {})
        return conn, conn.getresponse()

    def fetch(self, method, path, body=None, headers=None):
        conn, response = self.request(method, path, body, headers)
        try:
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def raw(self, request_bytes):
        """A socket that sent ``request_bytes``."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        sock.sendall(request_bytes)
        return sock

    def ws(self, path, **options):
        return websocket.create_connection(f"ws://127.0.0.1:{self.port}{path}", timeout=WAIT, **options)


@pytest.fixture(scope="module")
def services():
    server = serve("127.0.0.1", 0)
    try:
        yield Services(server, server.application)
    finally:
        server.stop(timeout=1)


def session_url(service="/echo", server_id="000"):
    return f"{service}/{server_id}/{uuid.uuid4()}"


def read_until_closed(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_the_module_serves_the_four_services_on_a_port():
    """``python -m tests.conformance.sockjs_server --port PORT``, as the suite is run against it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.conformance.sockjs_server", "--port", str(port)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("SockJS test services on")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        for service in sockjs_server.SERVICES:
            conn.request("GET", service)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"Welcome to SockJS!\n")
    finally:
        process.terminate()
        process.wait(timeout=10)


class TestPaths:
    @pytest.mark.parametrize("suffix", ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"])
    def test_unknown_paths_are_404_and_never_redirect(self, services, suffix):
        assert services.fetch("GET", "/echo" + suffix)[0] == 404

    @pytest.mark.parametrize("ids", ["//", "/a./a", "/a/a.", "/./.", "/", "///"])
    def test_session_urls_without_two_dotless_segments_are_404(self, services, ids):
        assert services.fetch("GET", f"/echo{ids}/xhr")[0] == 404
        assert services.fetch("POST", f"/echo{ids}/xhr")[0] == 404

    @pytest.mark.parametrize("ids", ["/_/_", "/1/2", "/abcdefgh_i-j%20/abcdefg_i-j%20", "/a/:;!~*'()"])
    def test_any_dotless_segment_is_a_session_id(self, services, ids):
        status, _, body = services.fetch("POST", f"/echo{ids}{uuid.uuid4().hex[:4]}/xhr")
        assert (status, body) == (200, b"o\n")

    @pytest.mark.parametrize("method, transport", [("GET", "xhr_send"), ("GET", "xhr"), ("GET", "jsonp_send"),
                                                   ("POST", "eventsource"), ("POST", "jsonp"), ("PUT", "xhr")])
    def test_a_method_a_transport_does_not_take_is_404(self, services, method, transport):
        assert services.fetch(method, f"{session_url()}/{transport}")[0] == 404

    def test_the_server_id_is_ignored(self, services):
        session_id = uuid.uuid4()
        assert services.fetch("POST", f"/echo/000/{session_id}/xhr")[2] == b"o\n"
        assert services.fetch("POST", f"/echo/000/{session_id}/xhr_send", b'["a"]')[0] == 204
        assert services.fetch("POST", f"/echo/999/{session_id}/xhr")[2] == b'a["a"]\n'


class TestWebSocketUrlsOverHttp:
    def test_get_without_upgrade_is_400(self, services):
        status, _, body = services.fetch("GET", "/echo/0/0/websocket", headers={"Upgrade": "WebSocket",
                                                                                 "Connection": "close"})
        assert status == 400 and b"Upgrade" in body

    @pytest.mark.parametrize("headers", [{"Upgrade": "WebSocket", "Connection": "Upgrade"}, {}])
    def test_other_methods_are_405_with_allow_and_no_body(self, services, headers):
        status, response_headers, body = services.fetch("POST", "/echo/0/0/websocket", headers=headers)
        assert (status, body) == (405, b"")
        assert response_headers["Allow"] == "GET"
        assert "Content-Type" not in response_headers

    def test_disabled_websocket_has_no_websocket_urls(self, services):
        assert services.fetch("GET", "/disabled_websocket_echo/0/0/websocket")[0] == 404
        with pytest.raises(websocket.WebSocketBadStatusException):
            services.ws(f"{session_url('/disabled_websocket_echo')}/websocket")


class TestPages:
    def test_iframe_is_cacheable_for_a_year_with_expires_and_no_cookie(self, services):
        status, headers, body = services.fetch("GET", "/echo/iframe-0.1.2abc-dirty.2144.html?t=1")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=UTF-8"
        assert "public" in headers["Cache-Control"] and "max-age=31536000" in headers["Cache-Control"]
        assert headers["Expires"] and headers["ETag"] and "Last-Modified" not in headers
        assert "Set-Cookie" not in headers
        assert b'<script src="/static/sockjs.min.js?v=' in body
        status, headers, body = services.fetch("GET", "/echo/iframe.html", headers={"If-None-Match": headers["ETag"]})
        assert (status, body) == (304, b"") and "Content-Type" not in headers

    @pytest.mark.parametrize("page", ["/iframe.htm", "/iframe", "/IFRAME.HTML", "/iframe.HTML", "/iframe-/.html"])
    def test_other_pages_are_404(self, services, page):
        assert services.fetch("GET", "/echo" + page)[0] == 404

    @pytest.mark.parametrize("service, cookie_needed", [("/echo", False), ("/cookie_needed_echo", True)])
    def test_info_sets_no_cookie(self, services, service, cookie_needed):
        status, headers, body = services.fetch("GET", service + "/info", headers={"Origin": "test"})
        assert status == 200 and "Set-Cookie" not in headers
        assert headers["Cache-Control"] == NO_CACHE and "Expires" not in headers
        info = json.loads(body)
        assert info["cookie_needed"] is cookie_needed and info["websocket"] is True

    def test_info_of_the_disabled_websocket_service(self, services):
        assert json.loads(services.fetch("GET", "/disabled_websocket_echo/info")[2])["websocket"] is False


class TestCors:
    @pytest.mark.parametrize("origin", ["test", "null", "https://web.example"])
    def test_an_origin_is_echoed_with_credentials(self, services, origin):
        _, headers, _ = services.fetch("POST", f"{session_url()}/xhr", headers={"Origin": origin})
        assert headers["Access-Control-Allow-Origin"] == origin
        assert headers["Access-Control-Allow-Credentials"] == "true"

    def test_no_origin_is_answered_with_a_star_and_no_credentials(self, services):
        _, headers, _ = services.fetch("POST", f"{session_url()}/xhr")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in headers

    @pytest.mark.parametrize("path, methods", [("/echo/info", "OPTIONS, GET"), ("/echo/a/a/xhr", "OPTIONS, POST"),
                                               ("/echo/a/a/xhr_send", "OPTIONS, POST"),
                                               ("/echo/a/a/xhr_streaming", "OPTIONS, POST")])
    def test_preflights_are_cacheable_and_empty(self, services, path, methods):
        for origin in ("test", "null"):
            status, headers, body = services.fetch("OPTIONS", path, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            assert (status, body) == (204, b"")
            assert headers["Access-Control-Allow-Methods"] == methods
            assert int(headers["Access-Control-Max-Age"]) > 1_000_000 and headers["Expires"]
            assert headers["Access-Control-Allow-Origin"] == origin


class TestJsonp:
    def test_polling_and_sending(self, services):
        url = session_url()
        status, headers, body = services.fetch("GET", f"{url}/jsonp?c=%63allback")
        assert (status, body) == (200, b'/**/callback("o");\r\n')
        assert headers["Content-Type"] == "application/javascript; charset=UTF-8"
        assert headers["Cache-Control"] == NO_CACHE
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, headers, body = services.fetch("POST", f"{url}/jsonp_send", b"d=%5B%22x%22%5D", form)
        assert (status, body) == (200, b"ok") and headers["Content-Type"] == "text/plain; charset=UTF-8"
        assert services.fetch("POST", f"{url}/jsonp_send", b'["%61bc"]', {"Content-Type": "text/plain"})[2] == b"ok"
        assert services.fetch("GET", f"{url}/jsonp?c=x")[2] == b'/**/x("a[\\"x\\",\\"%61bc\\"]");\r\n'

    @pytest.mark.parametrize("body, answer", [(b"d=%5B%22x", b"Broken JSON encoding."), (b"", b"Payload expected."),
                                              (b"d=", b"Payload expected."), (b"p=p", b"Payload expected."),
                                              (b"d=%FF", b"Broken JSON encoding.")])
    def test_bad_sends(self, services, body, answer):
        url = session_url()
        services.fetch("GET", f"{url}/jsonp?c=x")
        status, _, response = services.fetch("POST", f"{url}/jsonp_send", body,
                                             {"Content-Type": "application/x-www-form-urlencoded"})
        assert (status, response) == (500, answer)

    @pytest.mark.parametrize("transport", ["jsonp", "htmlfile"])
    @pytest.mark.parametrize("callback", ["%20", "*", "abc(", "abc%28", "a" * 65, "x;alert(1)"])
    def test_callbacks_are_strictly_checked(self, services, transport, callback):
        status, _, body = services.fetch("GET", f"/echo/a/a/{transport}?c={callback}")
        assert (status, body) == (500, b'invalid "callback" parameter')

    @pytest.mark.parametrize("transport", ["jsonp", "htmlfile"])
    def test_a_callback_is_required(self, services, transport):
        assert services.fetch("GET", f"/echo/a/a/{transport}")[:3:2] == (500, b'"callback" parameter required')


class TestCookies:
    @pytest.mark.parametrize("method, transport", [("POST", "xhr"), ("GET", "jsonp?c=x")])
    def test_cookie_needed_sets_jsessionid_and_echoes_a_given_one(self, services, method, transport):
        _, headers, _ = services.fetch(method, f"{session_url('/cookie_needed_echo')}/{transport}")
        assert headers["Set-Cookie"].split(";")[0] == "JSESSIONID=dummy"
        assert headers["Set-Cookie"].split(";")[1].strip().lower() == "path=/"
        _, headers, _ = services.fetch(method, f"{session_url('/cookie_needed_echo')}/{transport}",
                                       headers={"Cookie": "JSESSIONID=abcdef"})
        assert headers["Set-Cookie"].split(";")[0] == "JSESSIONID=abcdef"

    def test_no_cookie_without_cookie_needed(self, services):
        assert "Set-Cookie" not in services.fetch("POST", f"{session_url()}/xhr")[1]


class TestClosedSessions:
    def test_a_closed_session_keeps_answering_its_close_frame(self, services):
        url = session_url("/close")
        assert services.fetch("POST", f"{url}/xhr")[2] == b"o\n"
        for _ in range(3):
            assert services.fetch("POST", f"{url}/xhr")[2] == b'c[3000,"Go away!"]\n'
        assert services.fetch("GET", f"{url}/jsonp?c=x")[2] == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'
        assert services.fetch("POST", f"{url}/xhr_send", b'["x"]')[0] == 404

    def test_every_stream_of_a_closed_session_gets_the_close_frame_and_ends(self, services):
        url = session_url("/close")
        for expected in ([b"o\n", b'c[3000,"Go away!"]\n'], [b'c[3000,"Go away!"]\n']):
            conn, response = services.request("POST", f"{url}/xhr_streaming")
            assert response.read1() == b"h" * 2048 + b"\n"
            assert response.read().splitlines(keepends=True) == expected  # and the response ended
            conn.close()

    def test_a_closed_session_is_forgotten_after_the_disconnect_delay(self, services):
        url = session_url("/close")
        session_id = url.rsplit("/", 1)[1]
        services.fetch("POST", f"{url}/xhr")
        services.fetch("POST", f"{url}/xhr")
        endpoint = services.endpoint("/close")
        assert endpoint.http_session(session_id).is_closed
        deadline = time.monotonic() + sockjs_server.OPTIONS["disconnect_delay_s"] + WAIT
        while endpoint.http_session(session_id) is not None:
            assert time.monotonic() < deadline
            gevent.sleep(0.1)


class TestInterruptedReceivers:
    def open_poll(self, services, url):
        """A polling request left waiting (its socket), once it is attached."""
        session_id = url.rsplit("/", 1)[1]
        sock = services.raw(f"POST {url}/xhr HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        http = services.endpoint("/echo").http_session(session_id)
        deadline = time.monotonic() + WAIT
        while http.receiver is None:
            assert time.monotonic() < deadline
            gevent.sleep(0.01)
        return sock, http

    def test_a_live_receiver_keeps_the_session(self, services):
        url = session_url()
        assert services.fetch("POST", f"{url}/xhr")[2] == b"o\n"
        sock, _ = self.open_poll(services, url)
        try:
            assert services.fetch("POST", f"{url}/xhr")[2] == b'c[2010,"Another connection still open"]\n'
        finally:
            sock.close()

    def test_the_next_request_finds_an_aborted_poll_and_ends_the_session(self, services):
        url = session_url()
        services.fetch("POST", f"{url}/xhr")
        sock, http = self.open_poll(services, url)
        sock.close()
        interrupted = b'c[1002,"Connection interrupted"]\n'
        assert services.fetch("POST", f"{url}/xhr")[2] == interrupted
        assert services.fetch("POST", f"{url}/xhr")[2] == interrupted  # remembered
        assert http.session.is_finished or http.is_closed

    def test_an_aborted_poll_is_noticed_without_another_request(self, services):
        url = session_url()
        services.fetch("POST", f"{url}/xhr")
        sock, http = self.open_poll(services, url)
        sock.close()
        deadline = time.monotonic() + 2 * ABORT_CHECK_S + WAIT  # the heart-beat is 25 s away
        while not http.is_closed:
            assert time.monotonic() < deadline
            gevent.sleep(0.05)
        assert http.close_frame == b'c[1002,"Connection interrupted"]'

    def test_an_aborted_stream_is_noticed_too(self, services):
        url = session_url()
        session_id = url.rsplit("/", 1)[1]
        conn, response = services.request("POST", f"{url}/xhr_streaming")
        response.read1()
        http = services.endpoint("/echo").http_session(session_id)
        while http.receiver is None:
            gevent.sleep(0.01)
        conn.close()
        response.close()
        deadline = time.monotonic() + 2 * ABORT_CHECK_S + WAIT
        while not http.is_closed:
            assert time.monotonic() < deadline
            gevent.sleep(0.05)
        conn, response = services.request("POST", f"{url}/xhr_streaming")
        response.read1()
        assert response.read() == b'c[1002,"Connection interrupted"]\n'
        conn.close()


class TestStreams:
    def test_eventsource_content_type_has_no_charset(self, services):
        conn, response = services.request("GET", f"{session_url()}/eventsource")
        try:
            assert response.headers["Content-Type"] == "text/event-stream"
            assert response.headers["Cache-Control"] == NO_CACHE
            assert response.read1() == b"\r\n"
        finally:
            conn.close()

    def test_http10_streaming_ends_with_the_connection(self, services):
        url = session_url("/close")
        sock = services.raw(f"POST {url}/xhr_streaming HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n".encode())
        try:
            head, _, body = read_until_closed(sock).partition(b"\r\n\r\n")  # returns: the server closed it
        finally:
            sock.close()
        headers = head.lower()
        assert b"transfer-encoding" not in headers and b"content-length" not in headers
        assert b"connection: close" in headers
        assert body == b"h" * 2048 + b"\n" + b"o\n" + b'c[3000,"Go away!"]\n'

    def test_http11_streaming_is_chunked_one_frame_a_chunk(self, services):
        url = session_url("/close")
        sock = services.raw(f"POST {url}/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        try:
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                data += sock.recv(65536)
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body.endswith(b"2\r\no\n\r\n13\r\nc[3000,\"Go away!\"]\n\r\n0\r\n\r\n")


class TestWebSockets:
    def test_two_connections_may_share_a_session_id(self, services):
        url = f"{session_url()}/websocket"
        first, second = services.ws(url), services.ws(url)
        try:
            assert first.recv() == "o" and second.recv() == "o"
            first.send('["a"]')
            second.send('["b"]')
            assert (first.recv(), second.recv()) == ('a["a"]', 'a["b"]')
        finally:
            first.close()
            second.close()

    def test_broken_json_cuts_the_connection(self, services):
        ws = services.ws(f"{session_url()}/websocket")
        try:
            assert ws.recv() == "o"
            ws.send('["a')
            with pytest.raises(websocket.WebSocketConnectionClosedException):
                ws.recv()  # no close frame first: the connection just ends
        finally:
            ws.close()

    def test_the_close_frame_of_a_raw_websocket_carries_its_reason(self, services):
        ws = services.ws("/close/websocket")
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert frame.data == struct.pack("!H", 3000) + b"Go away!"
        finally:
            ws.close()

    def test_the_close_service_over_sockjs_websocket(self, services):
        ws = services.ws(f"{session_url('/close')}/websocket")
        try:
            assert ws.recv() == "o"
            assert ws.recv() == 'c[3000,"Go away!"]'
            opcode, _ = ws.recv_data_frame(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
        finally:
            ws.close()
