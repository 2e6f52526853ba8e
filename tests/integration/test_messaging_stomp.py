"""Chat round trips between clients on TWO gunicorn chat servers, over STOMP/WebSocket.

Each server is the real ``gunicorn -c gunicorn.conf.py`` process (one worker each) on the
embedded broker, MongoDB-wire server and Redis, with a real presence server. Tests wait
for ``/readyz`` (which includes the Kafka consumers' positions) before sending, so a
subscriber on the other server cannot miss the first message.
"""

import contextlib
import itertools
import json
import random

import pytest
from bson import ObjectId
from pymongo import MongoClient

from app.embedded import free_port
from app.settings import Settings
from app.stomp.frames import Frame
from app.composition import create_topics
from tests.conftest import MS
from tests.support.chat import StompError, client_opener, message_json, running_chat_server
from tests.support.presence import presence_settings
from tests.support.processes import presence_server_process, wait_ready
from tests.support.rooms import set_community, set_room_members

READY_TIMEOUT_S = 90_000 * MS
FRAME_TIMEOUT_S = 10_000 * MS
_IDS = itertools.count(random.randrange(10**6, 10**8) * 1000)


def fresh_id():
    return next(_IDS)


@pytest.fixture(scope="module")
def base_settings(embedded):
    settings = presence_settings(embedded, typing_interval_s=30.0, message_max_chars=200, chat_workers=1)
    create_topics(settings)
    return settings


@pytest.fixture(scope="module")
def servers(base_settings, log_dir):
    fields = {name: getattr(base_settings, name) for name in base_settings.__dataclass_fields__}
    with contextlib.ExitStack() as stack:
        presence = presence_server_process(base_settings, log_dir, name="presence-stomp").start()
        stack.callback(presence.stop)
        pair = []
        for name in ("chat-a", "chat-b"):
            settings = Settings.from_env({}, **{**fields, "chat_http_port": free_port(), "node_id": name})
            pair.append(stack.enter_context(running_chat_server(settings, log_dir, name=name)))
        for server in pair:
            wait_ready(server.http_url, READY_TIMEOUT_S)
        yield pair


@pytest.fixture(scope="module")
def db(base_settings):
    client = MongoClient(base_settings.mongo_url)
    yield client[base_settings.mongo_db]
    client.close()


@pytest.fixture
def world(base_settings):
    alice, bob, eve = fresh_id(), fresh_id(), fresh_id()
    room, community, channel = fresh_id(), fresh_id(), fresh_id()
    set_room_members(base_settings.redis_url, room, [alice, bob])
    set_community(base_settings.redis_url, community, [alice, bob], [channel])
    return type("World", (), dict(alice=alice, bob=bob, eve=eve, room=room, community=community,
                                  channel=channel))


@pytest.fixture
def connect(token_for):
    with client_opener(token_for, FRAME_TIMEOUT_S) as open_client:
        yield open_client


def next_of_type(client, destination, kind, user_id=None):
    def matches(frame):
        if frame.command != "MESSAGE" or frame.header("destination") != destination:
            return False
        body = message_json(frame)
        return body.get("type") == kind and (user_id is None or body.get("userId") == str(user_id))
    return message_json(client.wait_for(matches, timeout=FRAME_TIMEOUT_S))


def test_direct_message_between_two_servers(servers, world, connect, db):
    a, b = servers
    alice, bob = connect(a, world.alice), connect(b, world.bob)
    destination = f"/topic/direct/{world.room}"
    alice.subscribe(destination)
    bob.subscribe(destination)
    receipt = alice.send("/kafka/send-direct-message",
                         {"channelId": str(world.room), "content": "hello", "name": "Alice",
                          "userId": world.bob, "id": "65a1b2c3d4e5f60718293a4b"})
    assert receipt.command == "RECEIPT"
    # The RECEIPT comes after the store: the message is in MongoDB already.
    stored = list(db.directMessage.find({"channelId": world.room}))
    assert len(stored) == 1 and stored[0]["userId"] == world.alice
    body = next_of_type(bob, destination, "message")
    assert body == {"type": "message", "id": str(stored[0]["_id"]), "userId": str(world.alice), "name": "Alice",
                    "profileImage": None, "message": "hello", "time": body["time"], "seq": 1}
    assert next_of_type(alice, destination, "message")["id"] == body["id"]


def test_pipelined_sends_of_one_connection_are_receipted_stored_and_delivered_in_order(servers, world, connect, db):
    """One connection writes 200 SENDs without waiting for any RECEIPT (the server pipelines the acks)."""
    a, b = servers
    alice, bob = connect(a, world.alice), connect(b, world.bob)
    destination = f"/topic/direct/{world.room}"
    bob.subscribe(destination)
    contents = [f"m{n}" for n in range(200)]
    for n, content in enumerate(contents):
        alice.send_frame(Frame("SEND", (("destination", "/kafka/send-direct-message"), ("receipt", f"p{n}")),
                               json.dumps({"channelId": world.room, "content": content}).encode()))
    replies = [alice.receive_frame(FRAME_TIMEOUT_S) for _ in contents]
    assert [(fr.command, fr.header("receipt-id")) for fr in replies] == [("RECEIPT", f"p{n}") for n in range(200)]
    # Every RECEIPT came after its store: all 200 are there, in SEND order (ObjectIds ascend).
    stored = db.directMessage.find({"channelId": world.room}).sort("_id", 1)
    assert [doc["content"] for doc in stored] == contents
    assert [next_of_type(bob, destination, "message")["message"] for _ in contents] == contents


def test_channel_message_between_two_servers(servers, world, connect):
    a, b = servers
    alice, bob = connect(a, world.alice), connect(b, world.bob)
    destination = f"/topic/group/{world.channel}"
    alice.subscribe(destination)
    bob.send("/kafka/send-channel-message", {"channelId": world.channel, "communityId": world.community,
                                             "content": "hi channel", "name": "Bob"})
    body = next_of_type(alice, destination, "message")
    assert (body["userId"], body["message"], body["name"]) == (str(world.bob), "hi channel", "Bob")


def test_extras_between_two_servers(servers, world, connect, db):
    a, b = servers
    alice, bob = connect(a, world.alice), connect(b, world.bob)
    destination = f"/topic/direct/{world.room}"
    alice.subscribe(destination)
    bob.subscribe(destination)
    bob.send("/kafka/send-direct-message", {"channelId": world.room, "content": "question?", "name": "Bob"})
    parent = next_of_type(alice, destination, "message")

    alice.send("/kafka/send-direct-reply", {"channelId": world.room, "content": "answer", "name": "Alice",
                                            "parentId": parent["id"], "parentName": "forged"})
    reply = next_of_type(bob, destination, "reply")
    assert (reply["parentName"], reply["parentContent"]) == ("Bob", "question?")

    with pytest.raises(StompError) as refused:
        alice.send("/kafka/send-direct-modify", {"channelId": world.room, "id": parent["id"], "content": "x"})
    assert refused.value.message == "only the author may change a message"
    bob.send("/kafka/send-direct-modify", {"channelId": world.room, "id": parent["id"], "content": "edited"})
    modified = next_of_type(alice, destination, "modify")
    assert (modified["message"], modified["time"]) == ("edited", parent["time"])

    with pytest.raises(StompError):
        alice.send("/kafka/send-direct-delete", {"channelId": world.room, "id": parent["id"]})
    bob.send("/kafka/send-direct-delete", {"channelId": world.room, "id": parent["id"]})
    deleted = next_of_type(alice, destination, "delete")
    assert deleted == {"type": "delete", "id": parent["id"], "seq": deleted["seq"]} and deleted["seq"] > modified["seq"]
    assert db.directMessage.find_one({"_id": ObjectId(parent["id"])}) is None

    first = alice.send("/kafka/send-direct-typing", {"channelId": world.room, "content": "Alice"})
    second = alice.send("/kafka/send-direct-typing", {"channelId": world.room, "content": "Alice"})
    assert first.command == second.command == "RECEIPT"  # the dropped one is acknowledged too
    assert next_of_type(bob, destination, "typing") == {"type": "typing", "name": "Alice"}
    alice.send("/kafka/send-direct-message", {"channelId": world.room, "content": "marker"})
    next_of_type(bob, destination, "message")
    with pytest.raises(TimeoutError):
        bob.wait_for(lambda f: f.command == "MESSAGE" and message_json(f).get("type") == "typing", timeout=0.2)


@pytest.mark.parametrize("kind", ["direct", "group", "community"])
def test_subscribe_refused_for_non_members(servers, world, connect, kind):
    a, _ = servers
    ident = {"direct": world.room, "group": world.channel, "community": world.community}[kind]
    with pytest.raises(StompError) as refused:
        connect(a, world.eve).subscribe(f"/topic/{kind}/{ident}")
    assert refused.value.message == "forbidden"


def test_send_refusals_and_bad_payloads_store_nothing(servers, world, connect, db):
    a, _ = servers
    eve, alice = connect(a, world.eve), connect(a, world.alice)
    with pytest.raises(StompError) as refused:
        eve.send("/kafka/send-direct-message", {"channelId": world.room, "content": "x"})
    assert refused.value.message == "forbidden"
    with pytest.raises(StompError) as refused:
        alice.send("/kafka/send-direct-message", {"channelId": "Optional(5)", "content": "x"})
    assert refused.value.message == "channelId: must be a positive integer"
    with pytest.raises(StompError) as refused:
        alice.send("/kafka/send-direct-message", b"not json")
    assert refused.value.message == "body: malformed JSON"
    assert db.directMessage.count_documents({"channelId": world.room}) == 0


def test_connect_and_disconnect_are_pushed_to_the_users_rooms(servers, world, connect):
    a, b = servers
    bob = connect(b, world.bob)
    bob.subscribe(f"/topic/community/{world.community}")
    alice = connect(a, world.alice)
    # Bob's own connect push may arrive too (he connected just before subscribing).
    assert next_of_type(bob, f"/topic/community/{world.community}", "connect", world.alice) == \
        {"type": "connect", "userId": str(world.alice)}
    alice.disconnect()
    assert next_of_type(bob, f"/topic/community/{world.community}", "disconnect", world.alice) == \
        {"type": "disconnect", "userId": str(world.alice)}
