"""The messaging pipeline end to end on the real broker, MongoDB-wire server and Redis.

Two chat "nodes" are built with ``app.composition.build_chat_domain`` in this process (each with
its own node id, hence its own consumer groups) and a real presence server runs as a
child process. SENDs go straight to ``ChatApplication.send_handlers`` (what the STOMP
transport calls) and each node's pushes are recorded by a ``LocalDelivery`` stand-in, so
these tests cover validation → authorization → MongoDB → Kafka → every node's consumers
→ the exact §2.7 bodies, without the transport.
"""

import itertools
import json
import random
import uuid

import gevent
import pytest
from bson import ObjectId
from flask import Flask
from pymongo import MongoClient

from app.auth import Principal, mint_token
from app.contracts import ClientConnection
from app.errors import BackendUnavailable, BadRequest, Forbidden, NotFound
from app.http_envelope import register_error_handlers
from app.settings import Settings
from app.composition import build_chat_domain, create_topics
from tests.fakes import RecordingDelivery
from tests.conftest import MS
from tests.support.presence import presence_settings
from tests.support.processes import presence_server_process
from tests.support.rooms import set_community, set_room_members

READY_TIMEOUT_S = 60_000 * MS
PUSH_TIMEOUT_S = 10_000 * MS
_IDS = itertools.count(random.randrange(10**6, 10**8) * 1000)


def fresh_id():
    return next(_IDS)


def wait_until(condition, timeout_s, message):
    with gevent.Timeout(timeout_s, AssertionError(message)):
        while not condition():
            gevent.sleep(0.02)


class Node:
    """One chat node built by the composition root, with a recording delivery."""

    def __init__(self, settings):
        self.settings = settings
        self.delivery = RecordingDelivery()
        self.domain = build_chat_domain(settings, self.delivery)
        self.app = self.domain.application
        self._sessions = itertools.count(1)

    def start(self):
        self.domain.start()

    def ready(self):
        try:
            for check in self.domain.readiness.values():
                check()
            return True
        except Exception:
            return False

    def connect(self, user_id):
        connection = ClientConnection(session_id=f"{self.settings.node_id}-{uuid.uuid4().hex[:8]}",
                                      principal=Principal(user_id, f"u{user_id}@smooth.test"),
                                      node_id=self.settings.node_id, transport="test")
        self.app.connected(connection)
        return connection

    def send(self, connection, destination, **payload):
        """As the transport does it: the handler, then its Pending (if any) to the end; the RECEIPT's headers."""
        pending = self.app.send_handlers[f"/kafka/{destination}"](connection, json.dumps(payload).encode())
        return pending.wait() if pending is not None else None

    def pushes(self, destination):
        return [json.loads(body) for dest, body in self.delivery.delivered if dest == destination]

    def wait_push(self, destination, predicate=lambda body: True):
        def found():
            return [b for b in self.pushes(destination) if predicate(b)]
        wait_until(found, PUSH_TIMEOUT_S, f"{self.settings.node_id}: no matching push on {destination}; "
                                          f"got {self.delivery.delivered[-5:]}")
        return found()[-1]


@pytest.fixture(scope="module")
def stack_settings(embedded):
    settings = presence_settings(embedded, typing_interval_s=30.0, message_max_chars=200)
    create_topics(settings)
    return settings


@pytest.fixture(scope="module")
def presence(stack_settings, log_dir):
    process = presence_server_process(stack_settings, log_dir, name="presence-e2e").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def nodes(stack_settings, presence):
    pair = [Node(Settings.from_env({}, **{**_fields(stack_settings), "node_id": name}))
            for name in ("node-a", "node-b")]
    for node in pair:
        node.start()
    wait_until(lambda: all(node.ready() for node in pair), READY_TIMEOUT_S, "nodes did not become ready")
    yield pair
    for node in pair:
        node.domain.stop()


def _fields(settings):
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


@pytest.fixture(scope="module")
def db(stack_settings):
    client = MongoClient(stack_settings.mongo_url)
    yield client[stack_settings.mongo_db]
    client.close()


@pytest.fixture
def world(stack_settings):
    """Fresh users, a DM room and a community with one text channel, in the Redis cache."""
    alice, bob, eve = fresh_id(), fresh_id(), fresh_id()
    room, community, channel = fresh_id(), fresh_id(), fresh_id()
    set_room_members(stack_settings.redis_url, room, [alice, bob])
    set_community(stack_settings.redis_url, community, [alice, bob], [channel])
    return type("World", (), dict(alice=alice, bob=bob, eve=eve, room=room, community=community,
                                  channel=channel))


def test_direct_message_reaches_both_nodes_after_it_is_stored(nodes, world, db):
    a, b = nodes
    alice = a.connect(world.alice)
    a.send(alice, "send-direct-message", channelId=str(world.room), content="hello bob", name="Alice",
           userId=world.bob, id="65a1b2c3d4e5f60718293a4b")
    body = b.wait_push(f"/topic/direct/{world.room}", lambda body: body["type"] == "message")
    assert set(body) == {"type", "id", "userId", "name", "profileImage", "message", "time", "seq"}
    assert (body["type"], body["userId"], body["name"], body["message"]) == \
        ("message", str(world.alice), "Alice", "hello bob")
    assert body["id"] != "65a1b2c3d4e5f60718293a4b"
    doc = db.directMessage.find_one({"_id": ObjectId(body["id"])})
    assert doc["userId"] == world.alice and doc["channelId"] == world.room
    assert a.wait_push(f"/topic/direct/{world.room}", lambda body: body["type"] == "message")["id"] == body["id"]


def test_channel_message_round_trip(nodes, world, db):
    a, b = nodes
    bob = b.connect(world.bob)
    b.send(bob, "send-channel-message", channelId=world.channel, communityId=str(world.community),
           content="hi all", name="Bob")
    body = a.wait_push(f"/topic/group/{world.channel}", lambda body: body["type"] == "message")
    assert (body["type"], body["userId"], body["message"]) == ("message", str(world.bob), "hi all")
    assert db.channelMessage.count_documents({"channelId": world.channel, "communityId": world.community}) == 1


def test_reply_modify_delete_and_typing(nodes, world, db):
    a, b = nodes
    alice, bob = a.connect(world.alice), b.connect(world.bob)
    destination = f"/topic/direct/{world.room}"
    b.send(bob, "send-direct-message", channelId=world.room, content="question?", name="Bob")
    parent = a.wait_push(destination, lambda body: body["type"] == "message")

    a.send(alice, "send-direct-reply", channelId=world.room, content="answer", name="Alice",
           parentId=parent["id"], parentName="forged", parentContent="forged")
    reply = b.wait_push(destination, lambda body: body["type"] == "reply")
    assert (reply["parentName"], reply["parentContent"], reply["message"]) == ("Bob", "question?", "answer")

    with pytest.raises(Forbidden):
        a.send(alice, "send-direct-modify", channelId=world.room, id=parent["id"], content="hacked")
    b.send(bob, "send-direct-modify", channelId=world.room, id=parent["id"], content="better question?")
    modified = a.wait_push(destination, lambda body: body["type"] == "modify")
    assert modified == {"type": "modify", "id": parent["id"], "userId": str(world.bob),
                        "message": "better question?", "time": parent["time"], "seq": modified["seq"]}
    assert modified["seq"] > parent["seq"]
    assert db.directMessage.find_one({"_id": ObjectId(parent["id"])})["editedAt"] is not None

    with pytest.raises(Forbidden):
        a.send(alice, "send-direct-delete", channelId=world.room, id=parent["id"])
    b.send(bob, "send-direct-delete", channelId=world.room, id=parent["id"])
    deleted = a.wait_push(destination, lambda body: body["type"] == "delete")
    assert deleted == {"type": "delete", "id": parent["id"], "seq": modified["seq"] + 1}
    assert db.directMessage.find_one({"_id": ObjectId(parent["id"])}) is None

    a.send(alice, "send-direct-typing", channelId=world.room, content="Alice")
    a.send(alice, "send-direct-typing", channelId=world.room, content="Alice")  # within 30 s: dropped
    assert b.wait_push(destination, lambda body: body["type"] == "typing") == {"type": "typing", "name": "Alice"}
    a.send(alice, "send-direct-message", channelId=world.room, content="marker")
    b.wait_push(destination, lambda body: body.get("message") == "marker")
    assert [p["type"] for p in b.pushes(destination)].count("typing") == 1


def test_refusals_and_bad_payloads_store_nothing(nodes, world, db):
    a, _ = nodes
    eve, alice = a.connect(world.eve), a.connect(world.alice)
    cases = [
        (eve, "send-direct-message", dict(channelId=world.room, content="x"), Forbidden),
        (eve, "send-channel-message", dict(channelId=world.channel, communityId=world.community, content="x"),
         Forbidden),
        (alice, "send-channel-message", dict(channelId=fresh_id(), communityId=world.community, content="x"),
         BadRequest),  # its community's channel list does not name it
        (alice, "send-direct-message", dict(channelId="Optional(5)", content="x"), BadRequest),
        (alice, "send-direct-message", dict(channelId=world.room, content="x" * 201), BadRequest),
        (alice, "send-direct-message", dict(channelId=world.room), BadRequest),
    ]
    for connection, destination, payload, error in cases:
        with pytest.raises(error):
            a.send(connection, destination, **payload)
    with pytest.raises(BadRequest, match="body"):
        a.app.send_handlers["/kafka/send-direct-message"](alice, b"{not json")
    assert db.directMessage.count_documents({"channelId": world.room}) == 0
    assert db.channelMessage.count_documents({"communityId": world.community}) == 0


@pytest.mark.parametrize("destination, ok", [("direct", True), ("group", True), ("community", True)])
def test_subscription_authorization(nodes, world, destination, ok):
    a, _ = nodes
    ident = {"direct": world.room, "group": world.channel, "community": world.community}[destination]
    a.app.authorize_subscription(a.connect(world.alice), f"/topic/{destination}/{ident}")
    with pytest.raises(Forbidden):
        a.app.authorize_subscription(a.connect(world.eve), f"/topic/{destination}/{ident}")


def test_presence_connect_join_disconnect(nodes, world, db):
    a, b = nodes
    alice = a.connect(world.alice)
    connect = b.wait_push(f"/topic/community/{world.community}",
                          lambda body: body == {"type": "connect", "userId": str(world.alice)})
    assert connect == b.wait_push(f"/topic/direct/{world.room}", lambda body: body.get("type") == "connect")

    a.send(alice, "join-channel", channel_id=f"r-{world.room}", user_id=world.bob, type="logout")
    a.send(alice, "join-channel", channel_id=f"c-{world.channel}")
    marks = {doc["channelId"]: doc["read"] for doc in db.messageTime.find(
        {"channelId": {"$in": [f"r-{world.room}", f"c-{world.channel}"]}})}
    assert str(world.alice) in marks[f"r-{world.room}"] and str(world.alice) in marks[f"c-{world.channel}"]
    with pytest.raises(Forbidden):
        a.send(a.connect(world.eve), "join-channel", channel_id=f"r-{world.room}")

    second = b.connect(world.alice)  # not the first session: no second connect push
    a.app.disconnected(alice)
    b.app.disconnected(second)
    b.wait_push(f"/topic/community/{world.community}",
                lambda body: body == {"type": "disconnect", "userId": str(world.alice)})
    community_pushes = [p for p in b.pushes(f"/topic/community/{world.community}") if p.get("userId")]
    assert [p["type"] for p in community_pushes] == ["connect", "disconnect"]


def test_voice_signaling_pushes_the_occupancy(nodes, world):
    a, b = nodes
    alice = a.connect(world.alice)
    a.send(alice, "community-signaling", community_id=str(world.community), user_id=world.bob)
    assert b.wait_push(f"/topic/community/{world.community}", lambda body: "type" not in body) == {}
    voice = fresh_id()
    a.send(alice, "signaling", community_id=world.community, channel_id=f"c-{voice}")
    occupancy = b.wait_push(f"/topic/community/{world.community}", lambda body: str(voice) in body)
    assert occupancy == {str(voice): [str(world.alice)]}


def test_service_endpoints_publish_voice_exits(nodes, world, stack_settings):
    a, b = nodes
    web = Flask("service-api-test")
    register_error_handlers(web)
    for blueprint in a.domain.blueprints:
        if blueprint.name == "chat_service_api":
            web.register_blueprint(blueprint)
    client = web.test_client()
    response = client.post("/chat-server/signaling-list-community",
                           json={"type": "out", "communityId": str(world.community), "channelId": "c-12",
                                 "ids": ["9"]})
    assert response.status_code == 200 and response.data == b""
    assert b.wait_push(f"/topic/community/{world.community}", lambda body: body.get("type") == "out") == \
        {"type": "out", "communityId": str(world.community), "channelId": "c-12", "ids": ["9"]}
    response = client.post("/chat-server/signaling-list-direct", json={"type": "out", "channelId": str(world.room),
                                                                       "ids": [world.bob]})
    assert response.status_code == 200
    assert b.wait_push(f"/topic/direct/{world.room}", lambda body: body.get("type") == "out") == \
        {"type": "out", "channelId": str(world.room), "ids": [str(world.bob)]}

    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.post("/chat-server/signaling-list-direct", json={"channelId": "1"},
                       environ_base=remote).status_code == 403
    token = mint_token(stack_settings.jwt_secret, world.alice)
    assert client.post("/chat-server/signaling-list-direct", json={"channelId": "1", "ids": []},
                       environ_base=remote, headers={"Authorization": token}).status_code == 403
    assert client.post("/chat-server/signaling-list-direct", json={"channelId": "1", "ids": []},
                       headers={"Authorization": token}).status_code == 403
    bad = client.post("/chat-server/signaling-list-community", json={"communityId": "x", "channelId": "c-1"})
    assert bad.status_code == 400 and bad.get_json()["message"] == "communityId: must be a positive integer"

    response = client.post("/chat-server/presence-offline", json={"userId": world.bob, "location": "home"})
    assert response.status_code == 200
    b.wait_push(f"/topic/direct/{world.room}",
                lambda body: body == {"type": "disconnect", "userId": str(world.bob)})


def test_with_the_broker_unreachable_a_send_is_stored_acknowledged_and_waits_in_the_outbox(stack_settings, world, db):
    """No broker: the SEND is still stored durably and acknowledged, and waits to be published."""
    from app.embedded import free_port
    settings = Settings.from_env({}, **{**_fields(stack_settings), "node_id": "node-dead-kafka",
                                        "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
                                        "kafka_send_timeout_s": 0.5})
    node = Node(settings)
    try:
        receipt = node.send(node.connect(world.alice), "send-direct-message", channelId=world.room,
                            content="kept while the broker is away")
        stored = db.directMessage.find_one({"channelId": world.room, "content": "kept while the broker is away"})
        assert stored is not None and receipt == {"message-id": str(stored["_id"])}
        assert db.unpublished.find_one({"ids": stored["_id"]}) is not None  # not published yet
        assert node.domain.info["outbox_backlog"]() == 1
    finally:
        node.domain.stop()


def test_services_stop_closes_the_consumers(stack_settings):
    node = Node(Settings.from_env({}, **{**_fields(stack_settings), "node_id": "node-short-lived"}))
    node.start()
    node.domain.stop()
    with pytest.raises(BackendUnavailable):
        node.domain.readiness["kafka"]()

