"""The MongoDB message writer against the real MongoDB-wire server."""

from dataclasses import replace
from datetime import datetime

import pytest
from bson import ObjectId
from bson.int64 import Int64

from app.backends.base import ChatMessage
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter

T0 = datetime(2022, 2, 21, 4, 5, 7, 123000)
T1 = datetime(2022, 2, 21, 5, 0, 0)


@pytest.fixture
def mongo(settings):
    connection = MongoConnection(settings)
    yield connection
    connection.close()


@pytest.fixture
def writer(mongo):
    return MongoMessageWriter(mongo)


def message(**overrides):
    values = dict(kind="channel", channel_id=12, community_id=3, user_id=5, content="hello",
                  created_at=T0, name="kim")
    values.update(overrides)
    return ChatMessage(**values)


def test_insert_generates_the_id_and_stores_the_reference_shape(writer, mongo):
    stored = writer.insert(message(id="65a1b2c3d4e5f60718293a4b"))
    assert stored.id != "65a1b2c3d4e5f60718293a4b" and ObjectId.is_valid(stored.id)
    doc = mongo.db.channelMessage.find_one({"_id": ObjectId(stored.id)})
    assert doc["channelId"] == Int64(12) and isinstance(doc["userId"], Int64) and doc["communityId"] == 3
    assert (doc["content"], doc["localDateTime"], doc["name"]) == ("hello", T0, "kim")
    assert writer.get("channel", stored.id) == stored


def test_a_client_id_never_overwrites_an_existing_message(writer):
    original = writer.insert(message(content="original"))
    writer.insert(message(id=original.id, user_id=66, content="overwrite attempt"))
    assert writer.get("channel", original.id).content == "original"


def test_get_with_a_bad_id_is_none(writer):
    assert writer.get("direct", "not-an-id") is None
    assert writer.get("direct", str(ObjectId())) is None


def test_edit_is_for_the_author_only_and_keeps_the_time(writer):
    stored = writer.insert(message())
    assert writer.edit("channel", stored.id, 66, "hacked", T1) is None
    edited = writer.edit("channel", stored.id, 5, "changed", T1)
    assert (edited.content, edited.created_at, edited.edited_at) == ("changed", T0, T1)
    assert writer.get("channel", stored.id) == edited


def test_delete_is_for_the_author_only(writer):
    stored = writer.insert(message(kind="direct", community_id=None))
    assert writer.delete("direct", stored.id, 66) is None
    assert writer.delete("direct", stored.id, 5) == stored
    assert writer.get("direct", stored.id) is None


def test_restore_and_remove_undo_changes(writer):
    stored = writer.insert(message())
    writer.edit("channel", stored.id, 5, "changed", T1)
    writer.restore(stored)
    assert writer.get("channel", stored.id) == stored
    writer.delete("channel", stored.id, 5)
    writer.restore(stored)
    assert writer.get("channel", stored.id) == stored
    writer.remove("channel", stored.id)
    assert writer.get("channel", stored.id) is None


def test_reply_fields_round_trip(writer):
    stored = writer.insert(message(type="reply", parent_id=str(ObjectId()), parent_name="lee",
                                   parent_content="first"))
    assert writer.get("channel", stored.id) == stored
    assert replace(stored, id="") == message(type="reply", parent_id=stored.parent_id, parent_name="lee",
                                             parent_content="first")


def test_indexes_are_created_once(mongo):
    mongo.ensure_indexes()
    mongo.ensure_indexes()
    names = {index["name"] for index in mongo.db.messageTime.list_indexes()}
    assert "location_unique" in names


def test_insert_many_stores_both_kinds_in_order_under_fresh_ids(writer, mongo):
    batch = [message(content="c1"), message(kind="direct", channel_id=7, community_id=None, content="d1"),
             message(content="c2", id="65a1b2c3d4e5f60718293a4b")]
    stored = writer.insert_many(batch)
    assert [m.content for m in stored] == ["c1", "d1", "c2"]
    assert len({m.id for m in stored}) == 3 and "65a1b2c3d4e5f60718293a4b" not in {m.id for m in stored}
    assert [writer.get(m.kind, m.id) for m in stored] == stored
    assert mongo.db.directMessage.count_documents({"_id": ObjectId(stored[1].id)}) == 1


def test_insert_many_reports_a_dead_server_for_every_message(settings):
    from dataclasses import replace as replace_settings

    from app.errors import BackendUnavailable
    dead = MongoConnection(replace_settings(settings, mongo_url="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"))
    try:
        results = MongoMessageWriter(dead).insert_many([message(), message(content="second")])
    finally:
        dead.close()
    assert [type(r) for r in results] == [BackendUnavailable, BackendUnavailable]
