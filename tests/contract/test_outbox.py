"""``Outbox``: ``MemoryOutbox`` against ``MongoOutbox`` on the MongoDB-wire server.

The cases are what the relay relies on: new messages are unpublished until marked published;
a sweep claims only what is older than asked, each entry once, oldest first; recorded changes
are claimed like messages and forgotten once dropped or published; old nonces are forgotten.
"""

from datetime import datetime

import time

import pytest

from app.backends.mongo_outbox import MongoOutbox
from app.chat.model import ChatMessage, PendingChange
from tests.fakes import MemoryMessageStore, MemoryOutbox

ROOM = 17
LONG_AGO = datetime(2000, 1, 1)


def message(content, **fields):
    values = dict(kind="direct", channel_id=ROOM, user_id=5, content=content,
                  created_at=datetime(2024, 5, 6, 7, 8, 9, 123000))
    values.update(fields)
    return ChatMessage(**values)


def now():
    """A stale-time cutoff after everything written so far (the database keeps milliseconds)."""
    time.sleep(0.005)
    cutoff = datetime.utcnow()
    time.sleep(0.005)
    return cutoff


class OutboxContract:
    """The cases; a subclass provides ``store`` and ``outbox`` over the same data."""

    def test_new_messages_are_unpublished_until_marked_and_claimed_once(self, store, outbox):
        a, b, c = store.insert_many([message("a"), message("b"), message("c")])
        outbox.published([("direct", b.id)])
        cutoff = now()
        claimed = outbox.claim_stale(cutoff, "sweeper-1", 100)
        assert [m.content for m in claimed.messages] == ["a", "c"]
        assert outbox.claim_stale(cutoff, "sweeper-2", 100).messages == []

    def test_nothing_newer_than_asked_is_claimed(self, store, outbox):
        store.insert_many([message("fresh")])
        assert outbox.claim_stale(LONG_AGO, "sweeper", 100).messages == []

    def test_a_claim_takes_at_most_its_limit_oldest_first(self, store, outbox):
        for n in range(5):  # one round each (a claim takes a round's messages together)
            store.insert_many([message(str(n))])
        cutoff = now()
        assert [m.content for m in outbox.claim_stale(cutoff, "sweeper", 2).messages] == ["0", "1"]
        assert [m.content for m in outbox.claim_stale(cutoff, "sweeper", 10).messages] == ["2", "3", "4"]

    def test_a_claimed_entry_is_claimable_again_once_stale_again(self, store, outbox):
        store.insert_many([message("a")])
        assert len(outbox.claim_stale(now(), "dies", 10).messages) == 1
        assert [m.content for m in outbox.claim_stale(now(), "next", 10).messages] == ["a"]

    def test_marked_messages_stay_stored(self, store, outbox):
        stored, = store.insert_many([message("a")])
        outbox.published([("direct", stored.id)])
        assert store.get("direct", stored.id) == stored

    def test_changes_are_claimed_until_dropped_or_published(self, outbox):
        kept = outbox.add_change(PendingChange("modify", "direct", ROOM, "1" * 24, content="v2",
                                               edited_at=datetime(2024, 5, 6, 7, 9, 0, 250000)))
        dropped = outbox.add_change(PendingChange("delete", "direct", ROOM, "2" * 24))
        published = outbox.add_change(PendingChange("delete", "channel", 12, "3" * 24))
        assert len({kept.id, dropped.id, published.id}) == 3 and kept.id
        outbox.drop_change(dropped.id)
        outbox.published([("change", published.id)])
        (claimed,) = outbox.claim_stale(now(), "sweeper", 10).changes
        assert claimed == kept

    def test_old_nonces_are_forgotten_and_recent_ones_kept(self, store, outbox):
        old, new = store.insert_many([message("old", nonce="a", created_at=datetime(2024, 1, 1)),
                                      message("new", nonce="b", created_at=datetime(2024, 6, 1))])
        assert outbox.forget_nonces(datetime(2024, 3, 1)) == 1
        assert store.get("direct", old.id).nonce is None and store.get("direct", new.id).nonce == "b"
        again, = store.insert_many([message("again", nonce="a")])
        assert isinstance(again, ChatMessage)  # the forgotten nonce may be used again


class TestFakeOutbox(OutboxContract):
    @pytest.fixture
    def store(self):
        return MemoryMessageStore()

    @pytest.fixture
    def outbox(self, store):
        return MemoryOutbox(store)


class TestRealOutbox(OutboxContract):
    @pytest.fixture
    def store(self, mongo_writer):
        return mongo_writer

    @pytest.fixture
    def outbox(self, mongo_connection):
        return MongoOutbox(mongo_connection)
