"""GroupCommit (app/chat/group_commit.py): rounds form while the store is busy, order is kept,
every sender hears its own outcome, and a repeated nonce is answered with the original message
without being handed on again. In-memory store; no timing is asserted."""

from dataclasses import replace
from datetime import datetime

import gevent
import pytest
from gevent.event import Event

from app.chat.group_commit import GroupCommit
from app.chat.model import ChatMessage
from app.errors import BackendError
from tests.fakes import MemoryEventLog, MemoryMessageStore, memory_room_log

T0 = datetime(2022, 2, 21, 4, 5, 7)


def message(content):
    return ChatMessage(kind="direct", channel_id=7, user_id=5, content=content, created_at=T0)


class GatedStore(MemoryMessageStore):
    """Each insert_many waits for the test to open the gate: a database round trip in progress."""

    def __init__(self):
        super().__init__()
        self.gate = Event()

    def insert_many(self, messages):
        self.gate.wait()
        return super().insert_many(messages)


def test_messages_submitted_while_a_round_is_in_the_database_form_the_next_round():
    store, published = GatedStore(), []
    commit = GroupCommit(store, memory_room_log())
    first = commit.submit(message("m0"), lambda m, r: published.append(m.content))
    gevent.sleep(0)  # the committer takes m0 and waits in the database
    rest = [commit.submit(message(f"m{n}"), lambda m, r: published.append(m.content)) for n in range(1, 6)]
    assert len(commit) == 5
    store.gate.set()
    for submitted in [first, *rest]:
        submitted.wait()
    assert store.batches == [1, 5]
    assert published == [f"m{n}" for n in range(6)]


def test_a_round_never_exceeds_max_batch():
    store = MemoryMessageStore()
    commit = GroupCommit(store, memory_room_log(), max_batch=4)
    submitted = [commit.submit(message(str(n)), lambda m, r: None) for n in range(10)]
    ids = [s.wait().id for s in submitted]
    assert store.batches == [4, 4, 2] and len(set(ids)) == 10


def test_wait_returns_the_stored_message_even_if_the_after_store_step_fails():
    commit = GroupCommit(MemoryMessageStore(), memory_room_log())

    def refuse(stored, record):
        raise LookupError("relay said no")

    stored = commit.submit(message("kept"), refuse).wait()
    assert stored.content == "kept" and stored.id  # stored is stored: the relay's sweep publishes it


def test_a_repeated_nonce_answers_the_original_and_is_not_handed_on_again():
    store, handed_on = MemoryMessageStore(), []
    commit = GroupCommit(store, memory_room_log())
    first = commit.submit(replace(message("a"), nonce="n"), lambda m, r: handed_on.append(m)).wait()
    again = commit.submit(replace(message("a, retried"), nonce="n"), lambda m, r: handed_on.append(m)).wait()
    assert again == first and handed_on == [first]


def test_a_message_is_counted_with_its_number_and_taken_back_when_surely_not_stored():
    """Numbering counts a round's new messages in their rooms; a repeat (not stored again) and
    a refused message are taken back, so the count is what the room holds."""
    class RefusesBad(MemoryMessageStore):
        def insert_many(self, messages):
            results = super().insert_many([m for m in messages if m.content != "bad"])
            return [BackendError("message not stored") if m.content == "bad" else results.pop(0) for m in messages]

    event_log = MemoryEventLog()
    commit = GroupCommit(RefusesBad(), memory_room_log(event_log))
    submitted = [commit.submit(replace(message("a"), nonce="n"), lambda m, r: None),
                 commit.submit(replace(message("a, retried"), nonce="n"), lambda m, r: None),
                 commit.submit(message("bad"), lambda m, r: None),
                 commit.submit(replace(message("other room"), channel_id=8), lambda m, r: None)]
    for one in submitted[:2] + submitted[3:]:
        one.wait()
    with pytest.raises(BackendError):
        submitted[2].wait()
    assert event_log.counted == {("direct", 7): 1, ("direct", 8): 1}


def test_a_store_that_raises_fails_every_sender_of_the_round_and_the_next_round_still_runs():
    class BrokenOnce(MemoryMessageStore):
        broken = True

        def insert_many(self, messages):
            if self.broken:
                self.broken = False
                raise RuntimeError("bug")
            return super().insert_many(messages)

    commit = GroupCommit(BrokenOnce(), memory_room_log())
    lost = [commit.submit(message(str(n)), lambda m, r: m.content) for n in range(3)]
    for submitted in lost:
        with pytest.raises(BackendError):
            submitted.wait()
    assert commit.submit(message("later"), lambda m, r: None).wait().content == "later"


def test_a_dead_store_reports_its_error_to_each_sender_and_publishes_nothing():
    store, published = MemoryMessageStore(), []
    store.fail = True
    commit = GroupCommit(store, memory_room_log())
    submitted = commit.submit(message("x"), lambda m, r: published.append(m))
    with pytest.raises(BackendError):
        submitted.wait()
    assert published == []
