"""Pipelined SENDs over real sockets: RECEIPTs in SEND order whatever order the acks come in.

The server runs in this process (the real transport around a test application, on a gevent WSGIServer) with an application
whose ``/kafka/defer`` SEND handler returns a Pending that the test finishes, in an order
it picks, once every SEND of the batch has reached the application: which also shows that
the connection's reader went on while the earlier SENDs were still in flight.
"""

import json
import time
import urllib.request

import gevent
import pytest

from app.errors import BackendUnavailable
from app.stomp.frames import SERVER_COMMANDS, Frame
from app.stomp.parser import FrameParser
from tests.conftest import MS
from tests.support.chat import ChatClient, RecordingApplication
from tests.support.pending import Deferred

WAIT = 5000 * MS  # upper bound for anything that must happen "soon"


class DeferringApplication(RecordingApplication):
    """``RecordingApplication`` plus ``/kafka/defer``, whose Pendings the test finishes."""

    def __init__(self):
        super().__init__()
        self.started = []

    @property
    def send_handlers(self):
        return {**super().send_handlers, "/kafka/defer": self._defer}

    def _defer(self, connection, body, key=None):
        pending = Deferred(body.decode(), timeout=WAIT)
        self.started.append(pending)
        return pending

    def wait_started(self, count):
        """The first ``count`` Pendings, once the application has handed them out."""
        deadline = time.monotonic() + WAIT
        while len(self.started) < count:
            assert time.monotonic() < deadline, f"{len(self.started)} of {count} SENDs reached the application"
            gevent.sleep(0.01)
        return self.started[:count]


@pytest.fixture
def application():
    return DeferringApplication()


def stomp(command, body=b"", **headers):
    return Frame(command, tuple((k.replace("_", "-"), v) for k, v in headers.items()), body)


def replies(frames):
    return [(fr.command, fr.header("receipt-id"), fr.header("message")) for fr in frames]


def frames_until_receipt(client, receipt_id):
    """Every frame up to and including the RECEIPT for ``receipt_id``, in arrival order."""
    received = []
    while not received or received[-1].header("receipt-id") != receipt_id:
        received.append(client.receive_frame(WAIT))
    return received


EXPECTED = [("RECEIPT", "s0", None), ("ERROR", "s1", "service unavailable"), ("RECEIPT", "s2", None),
            ("RECEIPT", "s3", None), ("RECEIPT", "sub", None), ("RECEIPT", "bye", None)]


def finish_out_of_order(sends):
    """s3 first, then s1 fails, then s2, and s0, the oldest, last."""
    sends[3].succeed()
    sends[1].fail(BackendUnavailable())
    sends[2].succeed()
    sends[0].succeed()


def test_receipts_come_back_in_send_order_and_a_failed_send_gets_only_an_error(server, application, token_for):
    with ChatClient(server.ws_url, timeout=WAIT) as client:
        client.connect(token_for(5))
        for n in range(4):  # sent without waiting for any reply
            client.send_frame(stomp("SEND", f"m{n}".encode(), destination="/kafka/defer", receipt=f"s{n}"))
        client.send_frame(stomp("SUBSCRIBE", destination="/topic/direct/7", id="0", receipt="sub"))
        sends = application.wait_started(4)
        assert [p.name for p in sends] == ["m0", "m1", "m2", "m3"]  # handled in SEND order
        finish_out_of_order(sends)
        client.send_frame(stomp("DISCONNECT", receipt="bye"))
        assert replies(frames_until_receipt(client, "bye")) == EXPECTED
        assert client.wait_closed(WAIT)
    application.wait_disconnected(application.connections[0].session_id, WAIT)
    assert len(application.disconnections) == 1


def test_a_connection_that_vanishes_with_sends_in_flight_ends_once(server, application, token_for):
    client = ChatClient(server.ws_url, timeout=WAIT)
    client.connect(token_for(5))
    for n in range(2):
        client.send_frame(stomp("SEND", f"m{n}".encode(), destination="/kafka/defer", receipt=f"s{n}"))
    sends = application.wait_started(2)
    client.close()
    session_id = application.connections[0].session_id
    application.wait_disconnected(session_id, WAIT)
    for pending in sends:  # the acks come in after the connection is gone: nothing to send them to
        pending.succeed()
    for pending in sends:
        assert pending.collected.wait(WAIT), "the server never took the ack"
    with ChatClient(server.ws_url, timeout=WAIT) as other:  # the server still serves
        other.connect(token_for(6))
        assert other.send("/kafka/echo", b"still here").command == "RECEIPT"
        # The acks were taken before this round trip began: a second disconnected() they
        # caused would be in the list by now.
        assert [c.session_id for c in application.disconnections] == [session_id]


def test_the_inflight_limit_setting_reaches_the_connection(start_server, application, token_for):
    server = start_server(stomp_max_inflight_sends=1)
    with ChatClient(server.ws_url, timeout=WAIT) as client:
        client.connect(token_for(5))
        # One WebSocket message: the reader meets the second SEND right after the first,
        # without yielding, so it has started it too unless the limit holds it back.
        client.send_raw(b"".join(stomp("SEND", f"m{n}".encode(), destination="/kafka/defer",
                                       receipt=f"s{n}").serialize() for n in range(2)))
        first = application.wait_started(1)[0]
        assert len(application.started) == 1
        first.succeed()
        application.wait_started(2)[1].succeed()
        assert replies(frames_until_receipt(client, "s1")) == [("RECEIPT", "s0", None), ("RECEIPT", "s1", None)]


class Xhr:
    """A SockJS session over xhr polling and xhr_send (the HTTP reader path)."""

    def __init__(self, server, session_id):
        self.base = f"{server.sockjs_url}/000/{session_id}"

    def post(self, path, body=b""):
        request = urllib.request.Request(self.base + path, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.read()

    def send(self, *frames):
        self.post("/xhr_send", json.dumps([fr.serialize().decode() for fr in frames]).encode())

    def frames_until_receipt(self, receipt_id):
        parser = FrameParser(max_frame_bytes=1 << 20, max_header_lines=100, max_header_bytes=1 << 16,
                             accepted_commands=SERVER_COMMANDS)
        received = []
        deadline = time.monotonic() + WAIT
        while not received or received[-1].header("receipt-id") != receipt_id:
            assert time.monotonic() < deadline, replies(received)
            body = self.post("/xhr")
            if body.startswith(b"a"):
                for message in json.loads(body[1:]):
                    parser.receive_data(message.encode("utf-8"))
                received += [event for event in parser.events_received() if isinstance(event, Frame)]
        return received


def test_sockjs_xhr_receipts_come_back_in_send_order(server, application, token_for):
    xhr = Xhr(server, "pipelined-1")
    assert xhr.post("/xhr") == b"o\n"
    xhr.send(stomp("CONNECT", accept_version="1.2", access_token=token_for(5)))
    xhr.send(*[stomp("SEND", f"m{n}".encode(), destination="/kafka/defer", receipt=f"s{n}") for n in range(4)],
             stomp("SUBSCRIBE", destination="/topic/direct/7", id="0", receipt="sub"))
    finish_out_of_order(application.wait_started(4))
    xhr.send(stomp("DISCONNECT", receipt="bye"))
    received = xhr.frames_until_receipt("bye")
    assert received[0].command == "CONNECTED"
    assert replies(received[1:]) == EXPECTED
