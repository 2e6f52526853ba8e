"""Resume and gap healing against the real servers: two chat nodes (gunicorn, as `make run`
starts them) on the embedded broker, MongoDB-wire server and Redis.

- A subscriber that was away while 100 messages, 10 edits and 10 deletes happened in its room
  (sent through both nodes) resumes with ``since-seq`` on the other node and gets exactly
  those events, in order.
- SENDs made while a replay is read arrive after it, with no gap and no duplicate.
- A record withheld from Kafka (stored and kept in the room's log, never published: what a
  broker that lost it leaves) still reaches live subscribers once, on the room's next event,
  and on its own once the room is quiet.
- A resume further back than the bound gets the reset body; one ahead of the room, an ERROR.
- The HTTP catch-up (``after_seq``) pages the same events.
"""

import json
import itertools
import random
import urllib.request
from datetime import datetime

import pytest

from app.backends.mongo_event_log import MongoEventLog
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.chat import events
from app.chat.model import ChatMessage, RoomEvent
from tests.conftest import MS, make_settings
from tests.support.chat import StompError, client_opener, run_js_script, running_chat_server
from tests.support.rooms import set_room_members

WAIT = 15_000 * MS
_ROOMS = itertools.count(random.randrange(10**6, 10**7) * 100)
ALICE, BOB, CAROL = 201, 202, 203
RESUME_MAX = 300


@pytest.fixture(scope="module")
def nodes(embedded, log_dir):
    first = make_settings(embedded, resume_max_events=RESUME_MAX, quiet_room_check_s=0.5)
    second = make_settings(embedded, mongo_db=first.mongo_db, resume_max_events=RESUME_MAX,
                           quiet_room_check_s=0.5)
    with running_chat_server(first, log_dir, name="chat-resume-a") as a, \
            running_chat_server(second, log_dir, name="chat-resume-b") as b:
        yield first, a, b


@pytest.fixture
def room(nodes):
    settings = nodes[0]
    room_id = next(_ROOMS)
    set_room_members(settings.redis_url, room_id, [ALICE, BOB, CAROL])
    return room_id


@pytest.fixture
def clients(token_for):
    with client_opener(token_for, WAIT) as open_client:
        yield open_client


def send(client, room, content):
    receipt = client.send("/kafka/send-direct-message", {"channelId": room, "content": content})
    return receipt.header("message-id")


def bodies(client, count, destination):
    """The next ``count`` numbered events pushed to ``destination`` (presence pushes skipped)."""
    numbered = []
    while len(numbered) < count:
        body = json.loads(client.receive_message(WAIT, destination).body)
        if "seq" in body:
            numbered.append(body)
    return numbered


def test_a_subscriber_that_was_away_gets_exactly_what_it_missed_in_order(nodes, room, clients):
    _, a, b = nodes
    topic = f"/topic/direct/{room}"
    alice, bob = clients(a, ALICE), clients(b, BOB)
    carol = clients(a, CAROL)
    carol.subscribe(topic)
    send(alice, room, "before")
    (seen,) = bodies(carol, 1, topic)
    carol.close()

    ids = [send(alice if n % 2 else bob, room, f"m{n}") for n in range(100)]
    expected = [("message", f"m{n}") for n in range(100)]
    for n in range(10):  # each message is edited by its author: odd ones are alice's
        sender = alice if (n * 2 + 1) % 2 else bob
        sender.send("/kafka/send-direct-modify", {"channelId": room, "id": ids[n * 2 + 1], "content": f"e{n}"})
        expected.append(("modify", f"e{n}"))
    for n in range(10):
        sender = alice if (n * 2 + 21) % 2 else bob
        sender.send("/kafka/send-direct-delete", {"channelId": room, "id": ids[n * 2 + 21]})
        expected.append(("delete", ids[n * 2 + 21]))

    back = clients(b, CAROL)
    back.subscribe(topic, headers={"since-seq": str(seen["seq"])})
    replayed = bodies(back, 120, topic)
    assert [body["seq"] for body in replayed] == list(range(seen["seq"] + 1, seen["seq"] + 121))
    assert [(body["type"], body.get("message") or body["id"]) for body in replayed] == expected
    send(alice, room, "after")
    (live,) = bodies(back, 1, topic)
    assert (live["message"], live["seq"]) == ("after", seen["seq"] + 121)


def test_sends_during_a_replay_arrive_after_it_without_gap_or_duplicate(nodes, room, clients):
    _, a, b = nodes
    topic = f"/topic/direct/{room}"
    alice, bob = clients(a, ALICE), clients(b, BOB)
    for n in range(200):
        send(alice, room, f"old{n}")
    carol = clients(b, CAROL)
    carol.subscribe(topic, receipt=False, headers={"since-seq": "0"})
    for n in range(40):  # while the replay is read and written
        send(bob if n % 2 else alice, room, f"new{n}")
    received = bodies(carol, 240, topic)
    assert sorted(body["seq"] for body in received) == list(range(1, 241))
    assert [body["message"] for body in received[:200]] == [f"old{n}" for n in range(200)]
    assert [body["message"] for body in received[200:]] == [f"new{n}" for n in range(40)]
    with pytest.raises(TimeoutError):
        bodies_within(carol, 1.0, topic)  # nothing more: no duplicate


def bodies_within(client, timeout, destination):
    while True:
        body = json.loads(client.receive_message(timeout, destination).body)
        if "seq" in body:
            return body


def withhold(settings, room, content):
    """Store a message and keep its record in the room's log, as a writer does, but never
    publish it: a record the broker lost."""
    connection = MongoConnection(settings)
    try:
        log = MongoEventLog(connection)
        seq = log.allocate({("direct", room): 1})[("direct", room)]
        message = ChatMessage(kind="direct", channel_id=room, user_id=ALICE, content=content,
                              created_at=datetime.utcnow(), seq=seq)
        stored = MongoMessageWriter(connection).insert(message)
        topic, _, value = events.new_message_record(stored)
        log.append([RoomEvent(("direct", room), seq, topic, value, datetime.utcnow())])
        return seq
    finally:
        connection.close()


def test_a_record_lost_by_the_broker_reaches_live_subscribers_on_the_next_event(nodes, room, clients):
    settings, a, b = nodes
    topic = f"/topic/direct/{room}"
    alice = clients(a, ALICE)
    carol_a, carol_b = clients(a, CAROL), clients(b, CAROL)
    carol_a.subscribe(topic)
    carol_b.subscribe(topic)
    send(alice, room, "one")
    lost = withhold(settings, room, "lost")
    send(alice, room, "three")
    for carol in (carol_a, carol_b):
        got = bodies(carol, 3, topic)
        assert [(body["message"], body["seq"]) for body in got] == [("one", 1), ("lost", lost), ("three", 3)]


def test_a_quiet_room_whose_last_record_was_lost_gets_it_from_the_tail_check(nodes, room, clients):
    settings, a, b = nodes
    topic = f"/topic/direct/{room}"
    alice = clients(a, ALICE)
    carol = clients(b, CAROL)
    carol.subscribe(topic)
    send(alice, room, "one")
    bodies(carol, 1, topic)
    withhold(settings, room, "the tail")
    (tail,) = bodies(carol, 1, topic)  # no later event: the quiet-room check finds it
    assert (tail["message"], tail["seq"]) == ("the tail", 2)


def test_a_resume_beyond_the_bound_gets_a_reset_and_one_ahead_an_error(nodes, room, clients):
    settings, a, _ = nodes
    topic = f"/topic/direct/{room}"
    connection = MongoConnection(settings)
    try:
        MongoEventLog(connection).allocate({("direct", room): RESUME_MAX + 5})
    finally:
        connection.close()
    carol = clients(a, CAROL)
    carol.subscribe(topic, headers={"since-seq": "1"})
    (reset,) = bodies(carol, 1, topic)
    assert reset == {"type": "reset", "seq": RESUME_MAX + 5}
    with pytest.raises(StompError, match="since-seq: ahead"):
        carol.subscribe(topic, headers={"since-seq": str(RESUME_MAX + 6)})
    alice = clients(a, ALICE)
    send(alice, room, "still live")
    (live,) = bodies(carol, 1, topic)
    assert live["seq"] == RESUME_MAX + 6


def test_http_catch_up_pages_the_same_events(nodes, room, clients, token_for):
    _, a, _ = nodes
    alice = clients(a, ALICE)
    ids = [send(alice, room, f"m{n}") for n in range(5)]
    alice.send("/kafka/send-direct-delete", {"channelId": room, "id": ids[0]})

    def page(after):
        request = urllib.request.Request(f"{a.http_url}/chat-server/direct?ch_id={room}&after_seq={after}&size=4",
                                         headers={"Authorization": f"Bearer {token_for(CAROL)}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["result"]

    first = page(1)
    assert [event["seq"] for event in first["events"]] == [2, 3, 4, 5] and first["latest"] == 6
    second = page(first["next"])
    assert second["events"] == [{"type": "delete", "id": ids[0], "seq": 6}] and second["next"] == 6


def test_a_stompjs_client_resumes_after_a_disconnect(nodes, room, token_for):
    """@stomp/stompjs over sockjs-client keeps the last seq of its room and resubscribes with it
    when it reconnects by itself; it gets everything once, in order."""
    _, a, b = nodes
    result = run_js_script("resume_client.js", readerUrl=b.sockjs_url, senderUrl=a.ws_url,
                           readerToken=token_for(CAROL), senderToken=token_for(ALICE), room=room,
                           before=5, during=10, after=3)
    assert result["exit_status"] == 0, result
    assert [event["seq"] for event in result["received"]] == list(range(1, 19))
    assert [event["message"] for event in result["received"]] == (
        [f"before{n}" for n in range(5)] + [f"during{n}" for n in range(10)] + [f"after{n}" for n in range(3)])
    assert result["subscriptions"][0] is None and result["subscriptions"][1] == "5"
    assert result["errors"] == [] and result["resets"] == 0
