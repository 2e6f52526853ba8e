"""``EventLog``: ``MemoryEventLog`` against ``MongoEventLog`` on the MongoDB-wire server.

The cases are what sequences, replay and gap healing rely on: numbers start at 1 and are
handed out once, in blocks, per room; the log keeps each number's event once and reads it back
in order; the counters say which rooms went quiet when; old events are pruned.
"""

import time
from datetime import datetime, timedelta

import gevent
import pytest

from app.backends.mongo_event_log import GRANTS_KEPT, MongoEventLog
from app.chat.model import Latest, RoomEvent
from tests.fakes import MemoryEventLog

DM = ("direct", 17)
CHANNEL = ("channel", 17)


def event(room, seq, value=b"{}", at=None):
    return RoomEvent(room, seq, "chat-server-topic", value, at or datetime(2024, 5, 6, 7, 8, 9))


class EventLogContract:
    def test_numbers_start_at_one_and_come_in_blocks_per_room(self, log):
        assert log.allocate({DM: 3, CHANNEL: 1}) == {DM: 1, CHANNEL: 1}
        assert log.allocate({DM: 2}) == {DM: 4}
        assert log.latest(DM).seq == 5 and log.latest(CHANNEL).seq == 1
        assert log.latest(("direct", 99)) == Latest(0, None)
        assert abs(log.latest(DM).at - datetime.utcnow()) < timedelta(minutes=1)

    def test_concurrent_rounds_never_share_a_number(self, log):
        blocks = [gevent.spawn(log.allocate, {DM: k, CHANNEL: 1}) for k in (1, 2, 3, 4, 5)]
        gevent.joinall(blocks, raise_error=True)
        numbers = []
        for job, k in zip(blocks, (1, 2, 3, 4, 5)):
            numbers += range(job.value[DM], job.value[DM] + k)
        assert sorted(numbers) == list(range(1, 16))

    def test_one_room_rounds_and_many_room_rounds_never_share_a_number(self, log):
        rounds = [{DM: k} if k % 2 else {DM: k, CHANNEL: 1} for k in range(1, 9)]
        blocks = [gevent.spawn(log.allocate, counts) for counts in rounds]
        gevent.joinall(blocks, raise_error=True)
        numbers = [n for job, counts in zip(blocks, rounds) for n in range(job.value[DM], job.value[DM] + counts[DM])]
        assert sorted(numbers) == list(range(1, 37))

    def test_events_are_kept_once_and_read_in_order(self, log):
        log.append([event(DM, 2, b'{"n":2}'), event(DM, 1, b'{"n":1}'), event(CHANNEL, 1)])
        log.append([event(DM, 2, b'{"n":"again"}'), event(DM, 3, b'{"n":3}')])
        assert [(e.seq, e.value) for e in log.after(DM, 0, 10)] == [(1, b'{"n":1}'), (2, b'{"n":2}'),
                                                                    (3, b'{"n":3}')]
        assert [e.seq for e in log.after(DM, 1, 1)] == [2]
        assert [e.seq for e in log.after(DM, 0, 2)] == [1, 2]  # a range of numbers: (0, 2]
        assert log.after(DM, 3, 10) == []
        log.append([event(DM, 9)])
        assert [e.seq for e in log.after(DM, 3, 5)] == [] and [e.seq for e in log.after(DM, 3, 6)] == [9]
        read = log.after(CHANNEL, 0, 10)[0]
        assert (read.room, read.topic) == (CHANNEL, "chat-server-topic")

    def test_rooms_that_went_quiet_are_listed_with_their_last_number(self, log):
        log.allocate({DM: 2})
        time.sleep(0.01)
        middle = datetime.utcnow()
        time.sleep(0.01)
        log.allocate({CHANNEL: 1})
        assert log.went_quiet(middle - timedelta(hours=1), middle) == {DM: 2}
        assert log.went_quiet(middle, datetime.utcnow() + timedelta(seconds=1)) == {CHANNEL: 1}

    def test_old_events_are_pruned(self, log):
        log.append([event(DM, 1, at=datetime(2024, 1, 1)), event(DM, 2, at=datetime(2024, 6, 1))])
        assert log.prune(datetime(2024, 3, 1)) == 1
        assert [e.seq for e in log.after(DM, 0, 10)] == [2]


class TestFakeEventLog(EventLogContract):
    @pytest.fixture
    def log(self):
        return MemoryEventLog()


class TestRealEventLog(EventLogContract):
    @pytest.fixture
    def log(self, mongo_connection):
        return MongoEventLog(mongo_connection)


class TestRealEventLogGrants:
    def test_a_grant_that_scrolled_away_takes_a_block_of_its_own(self, mongo_connection):
        log = MongoEventLog(mongo_connection)
        log.allocate({DM: 1})
        original = log._counters.bulk_write

        def others_first(updates, **kwargs):  # GRANTS_KEPT rounds land between our write and read
            result = original(updates, **kwargs)
            for _ in range(GRANTS_KEPT):
                log._counters.update_one({"_id": "direct:17"}, {"$inc": {"seq": 1}, "$push": {
                    "grants": {"$each": [{"t": "other", "k": 1}], "$slice": -GRANTS_KEPT}}})
            return result

        log._counters.bulk_write = others_first
        first = log.allocate({DM: 2, CHANNEL: 1})[DM]  # two rooms: the bulk write and its read-back
        assert first == 1 + 1 + GRANTS_KEPT + 2  # its first block (2, 3) stays unused
        assert log.latest(DM).seq == first + 1

    def test_one_room_rounds_of_two_processes_at_once_never_share_a_number(self, mongo_connection):
        """Both processes know the counter, so each round tries its compare-and-set first."""
        logs = [MongoEventLog(mongo_connection), MongoEventLog(mongo_connection)]
        logs[0].allocate({DM: 1})
        logs[1].expect(DM, 1)
        rounds = [(logs[i % 2], i % 3 + 1) for i in range(30)]
        jobs = [gevent.spawn(log.allocate, {DM: k}) for log, k in rounds]
        gevent.joinall(jobs, raise_error=True)
        numbers = [n for job, (_, k) in zip(jobs, rounds) for n in range(job.value[DM], job.value[DM] + k)]
        assert sorted(numbers) == list(range(2, 2 + sum(k for _, k in rounds)))
        assert logs[0].latest(DM).seq == 1 + sum(k for _, k in rounds)
