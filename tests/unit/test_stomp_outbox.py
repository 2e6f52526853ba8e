"""The Outbox (app/stomp/outbox.py) and the writers that drain it (ws.py, sockjs.py): bounded, FIFO, one reader, producers never block.

No sockets: the writer writes to a recording sink. Every wait is bounded by WAIT; nothing
here asserts how fast anything happens.
"""

import gevent
import pytest
from gevent.exceptions import ConcurrentObjectUseError

from app.stomp.outbox import BATCH_FRAMES, NORMAL, POLICY_VIOLATION, Outbox, Pong, RawFraming
from app.stomp.sockjs import poll_response, stream_outbox
from app.stomp.ws import drain_websocket
from tests.conftest import MS

WAIT = 5000 * MS


class RecordingSink:
    """A WebSocket write side that records every call, in order."""

    def __init__(self):
        self.calls = []

    def send_message(self, data):
        self.calls.append(("message", data))

    def send_messages(self, messages):
        self.calls.append(("messages", list(messages)))

    def send_pong(self, payload):
        self.calls.append(("pong", payload))

    def send_raw(self, data):
        self.calls.append(("raw", data))

    def send_close(self, code, reason=""):
        self.calls.append(("close", code, reason) if reason else ("close", code))

    def frames(self):
        return [frame for kind, data in self.calls if kind == "messages" for frame in data]


class TickFraming:
    """SockJS-like framing: an opening, an idle tick, closing words."""

    opening = b"o"
    idle = b"h"
    closing = b"c"

    def encode(self, frames):
        return [b"a" + b"|".join(frames)]


def wait_until(predicate, timeout=WAIT):
    with gevent.Timeout(timeout, AssertionError("condition not reached in time")):
        while not predicate():
            gevent.sleep(0.001)


def writer_waiting(outbox):
    return outbox._waiter is not None


class TestOffer:
    def test_fifo_and_bounded_without_blocking(self):
        outbox = Outbox(3)
        assert [outbox.offer(b"%d" % n) for n in range(5)] == [True, True, True, False, False]
        assert len(outbox) == 3
        assert outbox.take(10) == [b"0", b"1", b"2"]
        assert outbox.take(10) == []

    def test_take_respects_the_limit_and_keeps_order(self):
        outbox = Outbox(100)
        for n in range(10):
            outbox.offer(b"%d" % n)
        assert outbox.take(4) == [b"0", b"1", b"2", b"3"]
        outbox.offer(b"10")
        assert outbox.take(100) == [b"%d" % n for n in range(4, 11)]

    def test_after_close_offers_are_dropped_not_refused(self):
        outbox = Outbox(2)
        outbox.close()
        assert outbox.offer(b"late") is True
        assert len(outbox) == 0 and outbox.finished

    def test_close_keeps_the_final_frame_even_when_full(self):
        outbox = Outbox(2)
        outbox.offer(b"a")
        outbox.offer(b"b")
        outbox.close(b"ERROR", code=POLICY_VIOLATION)
        assert outbox.take(10) == [b"ERROR"]
        assert outbox.close_code == POLICY_VIOLATION

    def test_close_after_the_backlog_unless_discarded(self):
        kept, dropped = Outbox(10), Outbox(10)
        for outbox in (kept, dropped):
            outbox.offer(b"a")
        kept.close(b"bye")
        dropped.close(b"bye", discard_backlog=True)
        assert kept.take(10) == [b"a", b"bye"]
        assert dropped.take(10) == [b"bye"]


class TestWait:
    def test_returns_at_once_when_something_is_queued_or_closed(self):
        queued, closed = Outbox(4), Outbox(4)
        queued.offer(b"x")
        closed.close()
        assert queued.wait(0) is True
        assert closed.wait(0) is True

    def test_times_out_empty_handed(self):
        assert Outbox(4).wait(10 * MS) is False

    def test_an_offer_wakes_the_waiting_reader(self):
        outbox = Outbox(4)
        waiter = gevent.spawn(outbox.wait, None)
        wait_until(lambda: writer_waiting(outbox))
        outbox.offer(b"x")
        assert waiter.get(timeout=WAIT) is True

    def test_an_offer_from_a_loop_callback_wakes_the_reader(self):
        outbox = Outbox(4)
        waiter = gevent.spawn(outbox.wait, None)
        wait_until(lambda: writer_waiting(outbox))
        gevent.get_hub().loop.run_callback(outbox.offer, b"x")  # a timer's heart-beat runs in the hub
        assert waiter.get(timeout=WAIT) is True

    def test_close_wakes_the_waiting_reader(self):
        outbox = Outbox(4)
        waiter = gevent.spawn(outbox.wait, None)
        wait_until(lambda: writer_waiting(outbox))
        outbox.close()
        assert waiter.get(timeout=WAIT) is True

    def test_a_second_reader_is_refused(self):
        outbox = Outbox(4)
        first = gevent.spawn(outbox.wait, None)
        wait_until(lambda: writer_waiting(outbox))
        with pytest.raises(ConcurrentObjectUseError):
            outbox.wait(None)
        first.kill()

    def test_a_killed_reader_leaves_no_waiter(self):
        outbox = Outbox(4)
        waiter = gevent.spawn(outbox.wait, None)
        wait_until(lambda: writer_waiting(outbox))
        waiter.kill(timeout=WAIT)
        assert not writer_waiting(outbox)
        outbox.offer(b"x")  # nobody to wake; the next reader finds it
        gevent.sleep(0)
        assert outbox.wait(None) is True
        assert outbox.take(4) == [b"x"]

    def test_a_reader_that_timed_out_is_not_woken_later(self):
        outbox = Outbox(4)
        assert outbox.wait(1 * MS) is False
        outbox.offer(b"x")  # no waiter: no wake-up is scheduled for the reader that left
        gevent.sleep(0)
        assert not outbox._wake_pending


class Pushed:
    """An outbox in push mode over a recording sink: the direct path writes to ``direct``
    (which takes ``room`` bytes in all, then nothing: a socket whose buffer filled), and
    every writer it starts is counted and runs ``drain_websocket``."""

    def __init__(self, max_frames=10, room=10**6, sink=None, framing=None):
        self.outbox = Outbox(max_frames)
        self.sink = sink or RecordingSink()
        self.framing = framing or RawFraming()
        self.room = room
        self.direct = []
        self.writers = []
        self.outbox.push_to(self, self.start)

    def send_frames(self, frames):
        return self.try_send(self.encode(frames))

    @staticmethod
    def encode(frames):
        return b"".join(b"<" + frame + b">" for frame in frames)

    def try_send(self, wire):
        taken = wire[:self.room]
        self.room -= len(taken)
        if taken:
            self.direct.append(taken)
        return None if len(taken) == len(wire) else wire[len(taken):]

    def start(self):
        self.writers.append(gevent.spawn(drain_websocket, self.outbox, self.sink, self.framing))

    def settle(self):
        gevent.joinall(self.writers, timeout=WAIT)
        assert all(writer.dead for writer in self.writers)


class TestDirectPath:
    def test_frames_go_straight_to_the_socket_and_no_writer_exists(self):
        pushed = Pushed()
        assert pushed.outbox.offer(b"a") and pushed.outbox.offer_many([b"b", b"c"])
        assert pushed.direct == [b"<a>", b"<b><c>"]
        assert pushed.writers == [] and len(pushed.outbox) == 0

    def test_the_unsent_rest_starts_one_writer_and_goes_out_before_later_frames(self):
        pushed = Pushed(room=4)
        assert pushed.outbox.offer(b"abcdef")  # "<abc" written now, "def>" left for a writer
        assert pushed.outbox.offer(b"next")  # queued behind the rest: never written around it
        assert pushed.outbox.offer(b"more")
        assert len(pushed.writers) == 1
        pushed.settle()
        assert pushed.direct == [b"<abc"]
        assert pushed.sink.calls == [("raw", b"def>"), ("messages", [b"next", b"more"])]

    def test_once_the_backlog_is_written_the_writer_ends_and_the_direct_path_is_back(self):
        pushed = Pushed(room=0)
        pushed.outbox.offer(b"x")
        pushed.settle()
        pushed.room = 100
        pushed.outbox.offer(b"y")
        assert pushed.direct == [b"<y>"] and len(pushed.writers) == 1

    def test_pongs_never_go_direct(self):
        pushed = Pushed()
        pushed.outbox.offer(Pong(b"p"))
        pushed.settle()
        assert pushed.direct == [] and pushed.sink.calls == [("pong", b"p")]

    def test_a_direct_write_counts_as_traffic_for_heart_beats(self):
        pushed = Pushed()
        pushed.outbox.last_write = 0.0
        pushed.outbox.offer(b"x")
        assert pushed.outbox.last_write > 0.0

    def test_transport_bytes_are_written_in_turn_and_do_not_count_as_traffic(self):
        pushed = Pushed(room=2)
        pushed.outbox.last_write = 0.0
        pushed.outbox.offer(b"frame")  # "<f" direct, the rest queued
        pushed.outbox.offer_wire(b"h")
        pushed.settle()
        assert pushed.sink.calls == [("raw", b"rame>"), ("raw", b"h")]
        assert pushed.outbox.last_write > 0.0  # set by the writer for the frame, not for "h"
        pushed.outbox.last_write = 0.0
        pushed.outbox.offer_wire(b"h")
        assert pushed.outbox.last_write == 0.0

    def test_a_full_queue_is_refused_before_any_direct_write(self):
        pushed = Pushed(max_frames=1, room=0)
        pushed.outbox.offer(b"queued")
        assert pushed.outbox.offer(b"more") is False
        assert pushed.outbox.offer_many([b"a"]) is False


class TestDrainWebsocket:
    def test_frames_in_order_batched_then_the_end(self):
        pushed = Pushed(max_frames=1000, room=0)
        frames = [b"%d" % n for n in range(BATCH_FRAMES * 2 + 5)]
        pushed.outbox.offer_many(frames)  # nothing fits the socket: one rest, then a backlog
        pushed.outbox.close()
        pushed.settle()
        assert pushed.sink.calls[0] == ("raw", pushed.encode(frames))
        assert pushed.sink.calls[-1] == ("close", NORMAL)
        assert pushed.outbox.ended and len(pushed.writers) == 1

    def test_batches_of_queued_frames_then_close(self):
        pushed = Pushed(max_frames=1000, room=0)
        pushed.outbox.offer(b"first")
        frames = [b"%d" % n for n in range(BATCH_FRAMES * 2 + 5)]
        for frame in frames:
            assert pushed.outbox.offer(frame)
        pushed.outbox.close()
        pushed.settle()
        writes = [data for kind, data in pushed.sink.calls if kind == "messages"]
        assert [frame for batch in writes for frame in batch] == frames
        assert [len(batch) for batch in writes] == [BATCH_FRAMES - 1, BATCH_FRAMES, 6]  # the rest took a slot

    def test_close_with_nothing_queued_starts_a_writer_for_the_closing_words(self):
        pushed = Pushed(framing=TickFraming())
        pushed.outbox.close(b"bye", code=POLICY_VIOLATION)
        pushed.settle()
        assert pushed.sink.calls == [("messages", [b"abye"]), ("message", b"c"), ("close", POLICY_VIOLATION)]
        assert pushed.outbox.ended and pushed.outbox.wait_ended(0)

    def test_the_close_frame_carries_the_reason(self):
        pushed = Pushed()
        pushed.outbox.close(code=3000, reason="Go away!")
        pushed.settle()
        assert pushed.sink.calls[-1] == ("close", 3000, "Go away!")

    def test_pongs_and_frames_keep_their_order(self):
        outbox, sink = Outbox(10), RecordingSink()
        outbox.offer(b"a")
        outbox.offer(Pong(b"ping"))
        outbox.offer(b"b")
        outbox.close()
        drain_websocket(outbox, sink, RawFraming())
        assert sink.calls == [("messages", [b"a"]), ("pong", b"ping"), ("messages", [b"b"]), ("close", NORMAL)]

    def test_a_broken_socket_ends_the_outbox_and_later_offers_are_dropped(self):
        class BrokenSink(RecordingSink):
            def send_raw(self, data):
                raise ConnectionResetError()

        pushed = Pushed(room=0, sink=BrokenSink())
        pushed.outbox.offer(b"x")
        pushed.settle()
        assert pushed.outbox.ended
        assert pushed.outbox.offer(b"y") and len(pushed.outbox) == 0 and len(pushed.writers) == 1

    def test_a_producer_never_waits_on_a_stalled_writer(self):
        class StalledSink(RecordingSink):
            def send_raw(self, data):
                gevent.sleep(WAIT * 10)  # a socket whose peer stopped reading

        pushed = Pushed(max_frames=3, room=0, sink=StalledSink())
        pushed.outbox.offer(b"first")
        wait_until(lambda: len(pushed.outbox) == 0)  # the writer took it and is stuck writing
        results = [pushed.outbox.offer(b"%d" % n) for n in range(5)]  # returns at once, every time
        assert results == [True, True, True, False, False] and len(pushed.writers) == 1
        pushed.writers[0].kill()


class TestSockJSReceivers:
    def test_poll_returns_what_is_queued_then_the_end(self):
        outbox = Outbox(10)
        outbox.offer(b"a")
        outbox.offer(b"b")
        assert poll_response(outbox, TickFraming(), timeout_s=WAIT) == b"aa|b"
        outbox.close()
        assert poll_response(outbox, TickFraming(), timeout_s=WAIT) == b"c"
        assert outbox.ended

    def test_poll_waits_for_a_frame_or_answers_idle(self):
        outbox = Outbox(10)
        assert poll_response(outbox, TickFraming(), timeout_s=10 * MS) == b"h"
        gevent.spawn_later(10 * MS, outbox.offer, b"late")
        assert poll_response(outbox, TickFraming(), timeout_s=WAIT) == b"alate"

    def test_stream_until_closed(self):
        outbox = Outbox(10)
        outbox.offer(b"a")
        chunks = []
        reader = gevent.spawn(lambda: chunks.extend(stream_outbox(outbox, TickFraming(), idle_s=WAIT,
                                                                  byte_limit=1 << 20)))
        wait_until(lambda: chunks == [b"aa"])
        outbox.offer(b"b")
        wait_until(lambda: len(chunks) == 2)
        outbox.close()
        reader.join(timeout=WAIT)
        assert chunks == [b"aa", b"ab", b"c"]
        assert outbox.ended

    def test_stream_stops_at_the_byte_limit(self):
        outbox = Outbox(10)
        outbox.offer(b"x" * 100)
        chunks = list(stream_outbox(outbox, TickFraming(), idle_s=WAIT, byte_limit=50))
        assert chunks == [b"a" + b"x" * 100]


class TestPongs:
    """RFC 6455 5.5.3: a pong for the latest ping only; pings never count against the bound."""

    def test_three_thousand_pings_leave_one_pong_and_the_bound_untouched(self):
        outbox, sink = Outbox(2), RecordingSink()
        for n in range(3000):
            outbox.offer_pong(str(n).encode())
        assert len(outbox) == 0
        assert outbox.offer(b"a") and outbox.offer(b"b")  # the whole bound is still the frames'
        outbox.close()
        drain_websocket(outbox, sink, RawFraming())
        assert sink.calls == [("pong", b"2999"), ("messages", [b"a", b"b"]), ("close", NORMAL)]

    def test_a_pong_owed_goes_out_before_queued_frames_and_a_discarded_backlog_drops_it(self):
        outbox = Outbox(10)
        outbox.offer(b"a")
        outbox.offer_pong(b"p")
        assert outbox.take(1) == [Pong(b"p")]
        assert outbox.take(5) == [b"a"]
        outbox.offer_pong(b"q")
        outbox.close(b"bye", discard_backlog=True)
        assert outbox.take(5) == [b"bye"]
        outbox.offer_pong(b"late")
        assert outbox.take(5) == []
