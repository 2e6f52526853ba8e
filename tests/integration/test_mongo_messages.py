"""The MongoDB message writer against the real MongoDB-wire server, and the room summaries it
keeps on every write path (insert, insert_many, delete, edit), the write concern, the
unpublished mark and the nonce index."""

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from bson import ObjectId
from bson.int64 import Int64
from pymongo import MongoClient, monitoring

from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.backends.mongo_schema import SUMMARIES, ensure_indexes
from app.chat.model import ChatMessage, Repeated
from tests.support.mongo_commands import ListenedConnection

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


def test_one_unencodable_message_fails_alone_in_its_batch(writer, mongo):
    """A lone surrogate cannot be BSON-encoded; the rest of the round is stored (issue 12 item 4)."""
    from app.errors import BackendError

    batch = [message(content="before"), message(content="bad \udc80"), message(content="after"),
             message(kind="direct", channel_id=7, community_id=None, name="x\udc80")]
    results = writer.insert_many(batch)
    assert [type(r) is ChatMessage for r in results] == [True, False, True, False]
    assert all(isinstance(r, BackendError) for r in (results[1], results[3]))
    assert [writer.get(m.kind, m.id).content for m in (results[0], results[2])] == ["before", "after"]


# -- room summaries ----------------------------------------------------------------------


class Updates(monitoring.CommandListener):
    """The ``update`` commands sent to ``roomSeq`` (``SUMMARIES``)."""

    def __init__(self) -> None:
        self.commands: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update" and event.command.get("update") == SUMMARIES:
            self.commands.append(dict(event.command))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def summary(mongo, kind="channel", room=12):
    doc = mongo.db[SUMMARIES].find_one({"_id": f"{kind}:{room}"})
    if doc is None:
        return None
    by_user = {int(user): n for user, n in doc.get("byUser", {}).items() if n}
    return doc["n"], by_user, doc.get("latest"), doc.get("first")


def test_insert_counts_the_message_into_its_rooms_summary(writer, mongo):
    writer.insert(message(created_at=T1))
    writer.insert(message(user_id=6, created_at=T0))
    assert summary(mongo) == (2, {5: 1, 6: 1}, T1, T0)
    assert summary(mongo, "direct") is None  # kinds are separate rooms


def test_insert_many_updates_each_room_once_in_one_command(settings):
    updates = Updates()
    connection = ListenedConnection(settings, updates)
    try:
        connection.ensure_indexes()
        updates.commands.clear()
        batch = [message(created_at=T0), message(user_id=6, created_at=T1), message(created_at=T1),
                 message(kind="direct", channel_id=7, community_id=None), message(channel_id=13)]
        MongoMessageWriter(connection).insert_many(batch)
        [command] = updates.commands
        assert len(command["updates"]) == 3  # channel 12, direct 7, channel 13
        assert summary(connection, "channel", 12) == (3, {5: 2, 6: 1}, T1, T0)
        assert summary(connection, "direct", 7) == (1, {5: 1}, T0, T0)
        assert summary(connection, "channel", 13) == (1, {5: 1}, T0, T0)
    finally:
        connection.client.drop_database(settings.mongo_db)
        connection.client.close()


def test_deleting_the_newest_message_moves_latest_back(writer, mongo):
    old = writer.insert(message(created_at=T0))
    new = writer.insert(message(user_id=6, created_at=T1))
    assert writer.delete("channel", new.id, 5) is None  # not the author: nothing changes
    assert summary(mongo) == (2, {5: 1, 6: 1}, T1, T0)
    writer.delete("channel", new.id, 6)
    assert summary(mongo) == (1, {5: 1}, T0, T0)
    writer.delete("channel", old.id, 5)
    assert summary(mongo) == (0, {}, None, T0)  # first is only ever a lower bound


def test_deleting_an_older_message_keeps_latest(writer, mongo):
    old = writer.insert(message(created_at=T0))
    writer.insert(message(created_at=T1))
    writer.delete("channel", old.id, 5)
    assert summary(mongo) == (1, {5: 1}, T1, T0)


def test_a_room_without_a_summary_does_not_get_one_from_a_delete(writer, mongo):
    doc = {"channelId": Int64(12), "userId": Int64(5), "content": "from before summaries", "localDateTime": T0}
    oid = mongo.db.channelMessage.insert_one(doc).inserted_id
    assert writer.delete("channel", str(oid), 5) is not None
    assert summary(mongo) is None  # not a summary claiming -1 messages


# -- durability, the outbox mark and the nonce index (issue 12) -------------------------------


@pytest.mark.parametrize("concern, expected", [("journaled", {"w": 1, "j": True}),
                                               ("majority", {"w": "majority", "j": True})])
def test_message_writes_wait_for_the_configured_write_concern(settings, concern, expected):
    """What a RECEIPT promises rests on this: inserts, edits and deletes ask for the journal."""
    from dataclasses import replace as replace_settings

    from tests.support.mongo_commands import CommandLog

    log = CommandLog()
    connection = ListenedConnection(replace_settings(settings, mongo_write_concern=concern), log)
    try:
        connection.ensure_indexes()
        writer = MongoMessageWriter(connection)
        log.clear()
        stored, = writer.insert_many([message()])
        writer.edit("channel", stored.id, 5, "v2", T1)
        writer.delete("channel", stored.id, 5)
        writes = log.named("insert") + log.named("update") + log.named("delete")
        assert len(writes) >= 3
        assert log.named("findAndModify") == []  # the embedded server scans a collection for one
        concerns = [(doc.get("insert") or doc.get("update") or doc.get("delete"), doc.get("writeConcern"))
                    for doc in writes]
        assert all(concern == expected for collection, concern in concerns if collection == "channelMessage"), concerns
    finally:
        connection.client.drop_database(settings.mongo_db)
        connection.client.close()


def test_insert_many_marks_each_new_message_unpublished(writer, mongo):
    before = datetime.utcnow() - timedelta(seconds=1)
    stored, = writer.insert_many([message()])
    mark = mongo.db.unpublished.find_one({"ids": ObjectId(stored.id)})
    assert mark["kind"] == "channel" and mark["pub"] >= before.replace(microsecond=0) and "pubBy" not in mark
    assert set(mongo.db.channelMessage.find_one({"_id": ObjectId(stored.id)})) >= {"content", "channelId"}


def test_a_message_not_stored_is_not_owed(writer, mongo):
    first, again = writer.insert_many([message(nonce="n-1"), message(nonce="n-1")])
    assert mongo.db.unpublished.count_documents({}) == 1
    _outbox(mongo).published([("channel", first.id)])  # the repeat is not waited for
    assert mongo.db.unpublished.count_documents({}) == 0


def test_a_seeded_message_is_not_in_the_outbox(writer, mongo):
    writer.insert(message())
    assert mongo.db.unpublished.count_documents({}) == 0



# -- round marks (app/backends/mongo_marks.py) ----------------------------------------------------


def _outbox(connection):
    from app.backends.mongo_outbox import MongoOutbox
    return MongoOutbox(connection)


def _stale_cutoff():
    return datetime.utcnow() + timedelta(seconds=1)


def test_a_round_is_marked_by_one_document_that_goes_with_its_last_publish(writer, mongo):
    a, b, c = writer.insert_many([message(content="a"), message(content="b"), message(content="c")])
    mark, = mongo.db.unpublished.find({})
    assert mark["ids"] == [ObjectId(a.id), ObjectId(b.id), ObjectId(c.id)] and mark["kind"] == "channel"
    outbox = _outbox(mongo)
    outbox.published([("channel", a.id), ("channel", c.id)])
    assert mongo.db.unpublished.count_documents({}) == 1  # b is still owed
    outbox.published([("channel", b.id)])
    assert mongo.db.unpublished.count_documents({}) == 0
    assert mongo.marks.owed == 0


def test_a_round_whose_messages_were_not_stored_leaves_no_mark(writer, mongo):
    writer.insert_many([message(nonce="n-1")])
    again, = writer.insert_many([message(nonce="n-1")])  # a repeat: nothing stored
    assert isinstance(again, Repeated)
    assert mongo.db.unpublished.count_documents({}) == 1  # the first round's, owed until published


def test_a_dead_writers_round_is_claimed_whole_and_its_publishes_settle_it(settings, writer, mongo):
    a, b = writer.insert_many([message(content="a"), message(content="b")])
    _outbox(mongo).published([("channel", a.id)])  # then its process dies, b unpublished
    other = MongoConnection(settings)  # another process: it knows nothing of what a published
    try:
        claimed = _outbox(other).claim_stale(_stale_cutoff(), "sweeper", 100).messages
        assert [m.content for m in claimed] == ["a", "b"]  # a goes out twice; consumers drop it
        _outbox(other).published([("channel", m.id) for m in claimed])
        assert mongo.db.unpublished.count_documents({}) == 0
    finally:
        other.close()


def test_the_writer_claiming_its_own_stale_round_takes_only_what_it_still_owes(writer, mongo):
    a, b = writer.insert_many([message(content="a"), message(content="b")])
    outbox = _outbox(mongo)
    outbox.published([("channel", a.id)])
    assert [m.content for m in outbox.claim_stale(_stale_cutoff(), "self", 100).messages] == ["b"]


def test_a_claim_takes_whole_rounds_up_to_its_limit_and_at_least_one(writer, mongo):
    writer.insert_many([message(content=str(n)) for n in range(3)])
    writer.insert_many([message(content=str(n)) for n in range(3, 5)])
    outbox = _outbox(mongo)
    assert [m.content for m in outbox.claim_stale(_stale_cutoff(), "s", 2).messages] == ["0", "1", "2"]
    assert mongo.db.unpublished.count_documents({"pubBy": "s"}) == 1  # the second round is left


def test_a_mark_of_the_earlier_version_is_claimed_and_settled(writer, mongo):
    stored = writer.insert(message(content="marked one by one"))  # stored with no mark...
    mongo.db.unpublished.insert_one({"_id": ObjectId(stored.id), "kind": "channel", "pub": T0})  # ...then as before
    outbox = _outbox(mongo)
    claimed = outbox.claim_stale(_stale_cutoff(), "sweeper", 100).messages
    assert [m.id for m in claimed] == [stored.id]
    outbox.published([("channel", stored.id)])
    assert mongo.db.unpublished.count_documents({}) == 0


def test_old_nonces_are_forgotten_through_their_index_in_batches(settings):
    """The retention sweep reads ids through the partial nonce index (a hint) and unsets by id:
    more than one batch of old nonces are all forgotten, newer ones and others' fields stay."""
    from app.backends.mongo_outbox import NONCE_BATCH, MongoOutbox
    from app.backends.mongo_schema import NONCE_TIME_INDEX
    from tests.support.mongo_commands import CommandLog

    log = CommandLog()
    connection = ListenedConnection(replace(settings, mongo_db=f"nonces_{ObjectId()}"), log)
    try:
        connection.ensure_indexes()
        old = [{"channelId": Int64(7), "userId": Int64(5), "content": "old", "localDateTime": T0, "nonce": f"o{i}"}
               for i in range(NONCE_BATCH + 5)]
        connection.db.directMessage.insert_many(old)
        connection.db.directMessage.insert_one({"channelId": Int64(7), "userId": Int64(5), "content": "new",
                                                "localDateTime": T1, "nonce": "kept"})
        log.clear()
        assert MongoOutbox(connection).forget_nonces(T0 + timedelta(minutes=1)) == NONCE_BATCH + 5
        assert connection.db.directMessage.count_documents({"nonce": {"$exists": True}}) == 1
        assert connection.db.directMessage.count_documents({"content": "old"}) == NONCE_BATCH + 5
        finds = [doc for doc in log.named("find") if doc.get("find") == "directMessage"]
        assert len(finds) == 2 and all(doc.get("hint") == NONCE_TIME_INDEX for doc in finds)
        updates = [u for doc in log.named("update") for u in doc["updates"]]
        assert updates and all("$in" in u["q"]["_id"] for u in updates)
    finally:
        connection.client.drop_database(connection.db.name)
        connection.client.close()
