"""``MessageWriter`` (+ ``remove``/``restore``): ``MemoryMessageStore`` against
``MongoMessageWriter`` on the MongoDB-wire server.

The cases are what the unit tests rely on the fake for: server-made ids, stored messages read
back equal, author-only edit and delete, and the undo operations of a failed publish.
Times are whole milliseconds, the precision MongoDB keeps.
"""

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from app.chat.model import ChatMessage
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

    def test_remove_undoes_an_insert_and_a_second_remove_changes_nothing(self, store):
        stored = store.insert(message())
        store.remove("direct", stored.id)
        assert store.get("direct", stored.id) is None
        store.remove("direct", stored.id)
        store.remove("direct", "not-an-id")

    def test_restore_puts_back_a_deleted_message_under_its_id(self, store):
        stored = store.insert(message())
        store.delete("direct", stored.id, AUTHOR)
        store.restore(stored)
        assert store.get("direct", stored.id) == stored

    def test_restore_undoes_an_edit(self, store):
        stored = store.insert(message("v1"))
        store.edit("direct", stored.id, AUTHOR, "v2", T0 + timedelta(minutes=1))
        store.restore(stored)
        assert store.get("direct", stored.id) == stored

    def test_restore_needs_the_stored_id(self, store):
        with pytest.raises(ValueError):
            store.restore(message())


class TestFakeMessageStore(MessageWriterContract):
    @pytest.fixture
    def store(self):
        return MemoryMessageStore()


class TestRealMessageStore(MessageWriterContract):
    @pytest.fixture
    def store(self, mongo_writer):
        return mongo_writer
