"""``MessageWriter``: ``MemoryMessageStore`` against ``MongoMessageWriter`` on the MongoDB-wire
server.

The cases are what the unit tests rely on the fake for: server-made ids, stored messages read
back equal, author-only edit and delete, and a repeated nonce answered with the original.
Times are whole milliseconds, the precision MongoDB keeps.
"""

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from app.chat.model import ChatMessage, Repeated
from app.errors import BadRequest
from tests.fakes import MemoryMessageStore

T0 = datetime(2024, 5, 6, 7, 8, 9, 123000)
AUTHOR, OTHER, ROOM = 5, 9, 17
UNKNOWN_ID = "0" * 24


def message(content="hi", **fields):
    values = dict(kind="direct", channel_id=ROOM, user_id=AUTHOR, content=content, created_at=T0, name="Alice")
    values.update(fields)
    return ChatMessage(**values)


class MessageWriterContract:
    """The cases; a subclass provides the ``store`` fixture."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError

    def test_insert_gives_a_new_object_id_and_get_reads_the_message_back(self, store):
        stored = store.insert(message())
        assert len(stored.id) == 24 and int(stored.id, 16) >= 0
        assert stored == message().with_id(stored.id)
        assert store.get("direct", stored.id) == stored

    def test_insert_ignores_an_id_in_its_input_and_ids_are_unique(self, store):
        first = store.insert(message("first"))
        second = store.insert(message("second").with_id(first.id))
        assert second.id != first.id
        assert store.get("direct", first.id).content == "first"

    def test_every_field_survives_the_round_trip(self, store):
        full = message("reply", kind="channel", community_id=3, profile_image="http://img/a", type="reply",
                       thumbnail="http://img/t", parent_id="1" * 24, parent_name="Bob", parent_content="q",
                       edited_at=T0 + timedelta(seconds=1))
        stored = store.insert(full)
        assert store.get("channel", stored.id) == full.with_id(stored.id)

    def test_insert_many_answers_one_stored_message_per_input_in_order(self, store):
        batch = [message("d1"), message("c1", kind="channel", community_id=3), message("d2")]
        results = store.insert_many(batch)
        assert [r.content for r in results] == ["d1", "c1", "d2"]
        assert len({r.id for r in results}) == 3
        for original, stored in zip(batch, results):
            assert stored == original.with_id(stored.id)
            assert store.get(original.kind, stored.id) == stored

    def test_get_of_an_unknown_or_malformed_id_or_the_other_kind_is_none(self, store):
        stored = store.insert(message())
        assert store.get("direct", UNKNOWN_ID) is None
        assert store.get("direct", "not-an-id") is None
        assert store.get("channel", stored.id) is None

    def test_the_author_edits_content_and_edit_time_only(self, store):
        stored = store.insert(message("v1"))
        edited = store.edit("direct", stored.id, AUTHOR, "v2", T0 + timedelta(minutes=1))
        assert edited == replace(stored, content="v2", edited_at=T0 + timedelta(minutes=1))
        assert store.get("direct", stored.id) == edited

    def test_nobody_else_edits_and_an_unknown_message_is_not_edited(self, store):
        stored = store.insert(message("v1"))
        assert store.edit("direct", stored.id, OTHER, "hacked", T0) is None
        assert store.edit("direct", UNKNOWN_ID, AUTHOR, "v2", T0) is None
        assert store.edit("direct", "not-an-id", AUTHOR, "v2", T0) is None
        assert store.get("direct", stored.id) == stored

    def test_the_author_deletes_and_gets_the_removed_message(self, store):
        stored = store.insert(message())
        assert store.delete("direct", stored.id, AUTHOR) == stored
        assert store.get("direct", stored.id) is None
        assert store.delete("direct", stored.id, AUTHOR) is None

    def test_nobody_else_deletes(self, store):
        stored = store.insert(message())
        assert store.delete("direct", stored.id, OTHER) is None
        assert store.get("direct", stored.id) == stored

    def test_a_repeated_nonce_of_the_same_author_is_the_original_message(self, store):
        first, = store.insert_many([message("first", nonce="n-1")])
        again, other_author, other_nonce = store.insert_many(
            [message("again", nonce="n-1"), message("b", user_id=OTHER, nonce="n-1"), message("c", nonce="n-2")])
        assert isinstance(again, Repeated) and again.original == first
        assert isinstance(other_author, ChatMessage) and isinstance(other_nonce, ChatMessage)
        assert store.get("direct", first.id).nonce == "n-1"

    def test_the_same_nonce_twice_in_one_batch_stores_one_message(self, store):
        results = store.insert_many([message("a", nonce="n"), message("b", nonce="n")])
        stored = [r for r in results if isinstance(r, ChatMessage)]
        repeated = [r for r in results if isinstance(r, Repeated)]
        assert len(stored) == 1 and len(repeated) == 1 and repeated[0].original == stored[0]

    def test_a_nonce_reused_in_another_room_is_refused_not_answered_with_the_other_message(self, store):
        store.insert_many([message("a", nonce="n")])
        (other_room,) = store.insert_many([message("b", channel_id=ROOM + 1, nonce="n")])
        assert isinstance(other_room, BadRequest) and other_room.message.startswith("nonce:")

    def test_messages_without_a_nonce_never_collide(self, store):
        results = store.insert_many([message("a"), message("b")])
        assert all(isinstance(r, ChatMessage) for r in results)


class TestFakeMessageStore(MessageWriterContract):
    @pytest.fixture
    def store(self):
        return MemoryMessageStore()


class TestRealMessageStore(MessageWriterContract):
    @pytest.fixture
    def store(self, mongo_writer):
        return mongo_writer
