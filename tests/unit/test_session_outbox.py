"""The Outbox and its writers (app/session.py): bounded, FIFO, one reader, producers never block.

No sockets: the writer writes to a recording sink. Every wait is bounded by WAIT; nothing
here asserts how fast anything happens.
"""

import gevent
import pytest
from gevent.exceptions import ConcurrentObjectUseError

from app.session import (
    BATCH_FRAMES,
    NORMAL,
    POLICY_VIOLATION,
    Outbox,
    Pong,
    RawFraming,
    poll_response,
    stream_outbox,
    write_websocket,
)
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

    def send_close(self, code):
        self.calls.append(("close", code))

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


class TestWriteWebsocket:
    def test_frames_in_order_batched_then_close(self):
        outbox, sink = Outbox(1000), RecordingSink()
        writer = gevent.spawn(write_websocket, outbox, sink, RawFraming())
        wait_until(lambda: writer_waiting(outbox))
        frames = [b"%d" % n for n in range(BATCH_FRAMES * 2 + 5)]
        for frame in frames:  # one burst: one wake-up, writes of up to BATCH_FRAMES each
            assert outbox.offer(frame)
        outbox.close()
        writer.join(timeout=WAIT)
        assert writer.dead
        assert sink.frames() == frames
        writes = [data for kind, data in sink.calls if kind == "messages"]
        assert [len(batch) for batch in writes] == [BATCH_FRAMES, BATCH_FRAMES, 5]
        assert sink.calls[-1] == ("close", NORMAL)
        assert outbox.ended

    def test_pongs_go_out_as_pongs(self):
        outbox, sink = Outbox(10), RecordingSink()
        outbox.offer(b"a")
        outbox.offer(Pong(b"ping"))
        outbox.offer(b"b")
        outbox.close()
        write_websocket(outbox, sink, RawFraming())
        assert ("pong", b"ping") in sink.calls
        assert sink.frames() == [b"a", b"b"]

    def test_opening_idle_and_closing_words(self):
        outbox, sink = Outbox(10), RecordingSink()
        writer = gevent.spawn(write_websocket, outbox, sink, TickFraming(), 10 * MS)
        wait_until(lambda: ("message", b"h") in sink.calls)
        outbox.offer(b"x")
        outbox.close(b"bye", code=POLICY_VIOLATION)
        writer.join(timeout=WAIT)
        assert sink.calls[0] == ("message", b"o")
        assert ("messages", [b"ax|bye"]) in sink.calls  # one wake-up, one batch, one write
        assert sink.calls[-2:] == [("message", b"c"), ("close", POLICY_VIOLATION)]

    def test_a_producer_never_waits_on_a_stalled_writer(self):
        outbox = Outbox(3)

        class StalledSink(RecordingSink):
            def send_messages(self, messages):
                gevent.sleep(WAIT * 10)  # a socket whose peer stopped reading

        writer = gevent.spawn(write_websocket, outbox, StalledSink(), RawFraming())
        wait_until(lambda: writer_waiting(outbox))
        outbox.offer(b"first")
        wait_until(lambda: not writer_waiting(outbox) and len(outbox) == 0)  # the writer is stuck writing
        results = [outbox.offer(b"%d" % n) for n in range(5)]  # returns at once, every time
        assert results == [True, True, True, False, False]
        writer.kill()


class DirectSocket:
    """A direct path that takes ``room`` bytes in all, then nothing: a socket whose buffer filled."""

    def __init__(self, room):
        self.room = room
        self.written = []

    def __call__(self, frames):
        wire = b"".join(b"<" + frame + b">" for frame in frames)
        taken = wire[:self.room]
        self.room -= len(taken)
        if taken:
            self.written.append(taken)
        return None if len(taken) == len(wire) else wire[len(taken):]


class TestDirectPath:
    def parked(self, outbox, sink):
        writer = gevent.spawn(write_websocket, outbox, sink, RawFraming())
        wait_until(lambda: writer_waiting(outbox))
        return writer

    def test_a_parked_writer_is_bypassed_and_stays_parked(self):
        outbox, sink = Outbox(10), RecordingSink()
        outbox.direct = direct = DirectSocket(room=1000)
        writer = self.parked(outbox, sink)
        assert outbox.offer(b"a") and outbox.offer(b"b")
        assert direct.written == [b"<a>", b"<b>"]
        assert len(outbox) == 0 and writer_waiting(outbox) and not outbox._wake_pending
        outbox.close()
        writer.join(timeout=WAIT)
        assert sink.calls == [("close", NORMAL)]

    def test_the_unsent_rest_goes_out_first_then_queued_frames_in_order(self):
        outbox, sink = Outbox(10), RecordingSink()
        outbox.direct = direct = DirectSocket(room=4)
        writer = self.parked(outbox, sink)
        assert outbox.offer(b"abcdef")  # "<abc" written now, "def>" left for the writer
        assert outbox.offer(b"next")  # queued behind the rest: never written around it
        outbox.close()
        writer.join(timeout=WAIT)
        assert direct.written == [b"<abc"]
        assert sink.calls == [("raw", b"def>"), ("messages", [b"next"]), ("close", NORMAL)]

    def test_nothing_goes_direct_while_frames_are_queued_or_the_writer_is_busy(self):
        outbox = Outbox(10)
        outbox.direct = direct = DirectSocket(room=1000)
        assert outbox.offer(b"a")  # no writer parked: queued
        assert direct.written == [] and len(outbox) == 1

    def test_pongs_never_go_direct(self):
        outbox, sink = Outbox(10), RecordingSink()
        outbox.direct = direct = DirectSocket(room=1000)
        writer = self.parked(outbox, sink)
        outbox.offer(Pong(b"p"))
        outbox.close()
        writer.join(timeout=WAIT)
        assert direct.written == [] and ("pong", b"p") in sink.calls

    def test_a_direct_write_counts_as_traffic_for_heart_beats_and_idle_ticks(self):
        outbox, sink = Outbox(10), RecordingSink()
        outbox.direct = DirectSocket(room=1000)
        writer = self.parked(outbox, sink)
        outbox.last_write = before = 0.0
        outbox.offer(b"x")
        assert outbox.last_write > before  # what the heart-beat timer and the idle tick go by
        writer.kill()

    def test_a_full_queue_is_refused_before_any_direct_write(self):
        outbox = Outbox(1)
        outbox.direct = direct = DirectSocket(room=1000)
        outbox.offer(b"queued")
        assert outbox.offer(b"more") is False and direct.written == []


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
