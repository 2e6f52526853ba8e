"""Issue 4 end to end: presence as real processes, seen through STOMP clients.

Every test runs against the real embedded Redis, Kafka-protocol broker and MongoDB-wire
server, one real presence process (``python -m app.tcp_presence``) and real gunicorn chat
servers. The presence process POSTs to chat server B (its ``CHAT_SERVER_URL``); every chat
server reaches presence on its ``PRESENCE_TCP_PORT``. ``NODE_LEASE_S`` is small so a dead
node's users go offline within a few seconds (lease + one reaper interval).

Covered: a SIGKILLed chat node's users go offline and peers get ``disconnect`` (via the
reaper and ``presence-offline``); two sessions of one user; voice occupancy and the
signaling server's ``out`` events (community and DM call); chatting while presence is down
and the ``sync`` that reconciles when it returns; presence requests built from the
session's identity, never from the payload (W-5).

Presence keeps its state in a Redis database of its own (:data:`PRESENCE_DB`) so this
module's short lease never reaps another suite's nodes. Every test uses fresh user, room
and community ids. The module's servers are shared; a test that stops presence restarts it.
Waits are upper bounds (scaled by ``CHAT_TESTS_TIMEOUT_FACTOR``), never speed assertions.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from app.embedded import EmbeddedStack, free_port
from app.settings import Settings
from app.composition import create_topics
from tests.conftest import MS, make_settings
from tests.support.chat import ChatClient, RunningChatServer, StompError, client_opener, message_json, running_chat_server
from tests.support.presence import LineClient, fresh_user_ids, http_json
from tests.support.processes import ServiceProcess, presence_server_process, wait_ready
from tests.support.rooms import set_community, set_room_members

PRESENCE_DB = 12
LEASE_S = 3.0
OK_REPLY = "반환메세지\r\n".encode("utf-8")
READY_TIMEOUT_S = 90_000 * MS
FRAME_TIMEOUT_S = 15_000 * MS
# A dead node's users are offline after lease + one reaper interval (lease / 3); the rest
# is slack for a loaded 2-core machine (an upper bound on a wait, not a speed assertion).
OFFLINE_BOUND_S = LEASE_S + LEASE_S / 3 + 25_000 * MS
STATE_TIMEOUT_S = 30_000 * MS
# How long a test listens for an event that must not come (only after a positive sentinel).
QUIET_S = 3_000 * MS


# -- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_settings(embedded: EmbeddedStack) -> Settings:
    """Shared settings: short lease, presence state on its own Redis database."""
    presence_redis = embedded.redis_url.rsplit("/", 1)[0] + f"/{PRESENCE_DB}"
    # Secure as `make run` starts it: presence calls chat back with the service token, the
    # chat nodes show presence the presence token.
    settings = make_settings(embedded, presence_redis_url=presence_redis, node_lease_s=LEASE_S,
                             chat_workers=1, typing_interval_s=30.0).with_generated_secrets()
    create_topics(settings)
    return settings


def chat_settings(base: Settings, node_id: str) -> Settings:
    """A chat node on a port of its own, sharing presence, broker, Mongo and Redis with ``base``."""
    return Settings.from_env({}, **{**_fields(base), "chat_http_port": free_port(), "node_id": node_id})


@pytest.fixture(scope="module")
def b_settings(base_settings: Settings) -> Settings:
    return chat_settings(base_settings, "e2e-b")


@pytest.fixture(scope="module")
def presence(base_settings: Settings, b_settings: Settings, log_dir: Path) -> Iterator[ServiceProcess]:
    """The presence process; it POSTs its events to chat server B."""
    settings = Settings.from_env({}, **{**_fields(base_settings),
                                        "chat_server_url": f"http://127.0.0.1:{b_settings.chat_http_port}"})
    process = presence_server_process(settings, log_dir, name="presence-e2e").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def chat_b(presence: ServiceProcess, b_settings: Settings, log_dir: Path) -> Iterator[RunningChatServer]:
    """Chat server B (the one presence calls back), ready (Kafka consumers joined)."""
    with running_chat_server(b_settings, log_dir, name="chat-e2e-b") as server:
        wait_ready(server.http_url, READY_TIMEOUT_S)
        yield server


@pytest.fixture
def connect(token_for: Callable[..., str]) -> Iterator[Callable[[RunningChatServer, int], ChatClient]]:
    """``connect(server, user_id)``: a CONNECTed client, closed after the test."""
    with client_opener(token_for, FRAME_TIMEOUT_S) as open_client:
        yield open_client


@dataclass(frozen=True)
class World:
    """Fresh ids: users ``five`` and ``nine``, both members of ``community`` and DM ``room``."""

    five: int
    nine: int
    community: int
    room: int
    text_channel: int
    voice_channel: int


@pytest.fixture
def world(base_settings: Settings) -> World:
    five, nine, community, room, text_channel, voice_channel = fresh_user_ids(6)
    set_community(base_settings.redis_url, community, [five, nine], [text_channel])
    set_room_members(base_settings.redis_url, room, [five, nine])
    return World(five, nine, community, room, text_channel, voice_channel)


# -- Helpers -------------------------------------------------------------------------------------


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def friends_state(presence: ServiceProcess, *user_ids: int) -> dict[str, str]:
    """``POST /presence-server/friends-state``: ``{"<id>": location | "offline"}``."""
    url = f"http://127.0.0.1:{presence.settings.presence_http_port}/presence-server/friends-state"
    status, body = http_json(url, [str(user) for user in user_ids])
    assert status == 200, body
    result: dict[str, str] = body["result"]
    return result


def wait_state(presence: ServiceProcess, expected: dict[int, str], timeout_s: float = STATE_TIMEOUT_S) -> None:
    """Poll friends-state until it equals ``expected``; AssertionError with the last answer."""
    wanted = {str(user): location for user, location in expected.items()}
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # presence may still be starting
            last = friends_state(presence, *expected)
            if last == wanted:
                return
        time.sleep(0.05)
    raise AssertionError(f"friends-state never became {wanted}; last {last}")


def next_body(client: ChatClient, destination: str, predicate: Callable[[Any], bool],
              timeout: float = FRAME_TIMEOUT_S) -> Any:
    """The JSON body of the first MESSAGE on ``destination`` matching ``predicate`` (others are kept)."""
    def matches(frame: Any) -> bool:
        return frame.command == "MESSAGE" and frame.header("destination") == destination and \
            predicate(message_json(frame))
    return message_json(client.wait_for(matches, timeout))


def presence_event(kind: str, user_id: int) -> Callable[[Any], bool]:
    """Matches ``{"type": kind, "userId": "<user_id>"}``."""
    return lambda body: isinstance(body, dict) and body.get("type") == kind and body.get("userId") == str(user_id)


def is_occupancy(body: Any) -> bool:
    """A voice-occupancy snapshot: an object of digit keys, without ``type``."""
    return isinstance(body, dict) and "type" not in body and all(key.isdigit() for key in body)


def signaling_line(user_id: int, community: str, channel: str) -> str:
    """The line the signaling server sends when a user's signaling socket closes (§7.2, §8)."""
    return f"{{type='signaling', user_id='{user_id}', community_id='{community}', channel_id='{channel}'}}"


# -- Tests ---------------------------------------------------------------------------------------


def test_sigkilled_node_users_go_offline_and_peers_get_disconnect(
        base_settings: Settings, presence: ServiceProcess, chat_b: RunningChatServer, world: World,
        connect: Callable[[RunningChatServer, int], ChatClient], log_dir: Path) -> None:
    """A SIGKILLed chat node's user gets ``disconnect`` pushed on every room and goes offline.

    A user who also has a session on the surviving node stays online.
    """
    community_topic, direct_topic = f"/topic/community/{world.community}", f"/topic/direct/{world.room}"
    two_nodes = fresh_user_ids(1)[0]
    with running_chat_server(chat_settings(base_settings, "e2e-a"), log_dir, name="chat-e2e-a") as chat_a:
        wait_ready(chat_a.http_url, READY_TIMEOUT_S)
        nine = connect(chat_b, world.nine)
        nine.subscribe(community_topic)
        nine.subscribe(direct_topic)
        connect(chat_a, world.five)
        # A and B share the broker: the connect made on A reaches B's subscriber.
        for topic in (community_topic, direct_topic):
            assert next_body(nine, topic, presence_event("connect", world.five)) == \
                {"type": "connect", "userId": str(world.five)}
        connect(chat_a, two_nodes)
        connect(chat_b, two_nodes)
        assert friends_state(presence, world.five, two_nodes) == {str(world.five): "home", str(two_nodes): "home"}

        chat_a.process.kill()
        assert not chat_a.process.alive

        for topic in (community_topic, direct_topic):
            assert next_body(nine, topic, presence_event("disconnect", world.five), OFFLINE_BOUND_S) == \
                {"type": "disconnect", "userId": str(world.five)}
        # One reaper pass logs out every session of A, so this state is final.
        wait_state(presence, {world.five: "offline", world.nine: "home", two_nodes: "home"}, OFFLINE_BOUND_S)


def test_two_sessions_of_one_user_push_disconnect_once(
        presence: ServiceProcess, chat_b: RunningChatServer, world: World,
        connect: Callable[[RunningChatServer, int], ChatClient]) -> None:
    """Closing one of two tabs keeps the user online and silent; closing the last pushes ``disconnect`` once."""
    topic = f"/topic/community/{world.community}"
    nine = connect(chat_b, world.nine)
    nine.subscribe(topic)
    tab1 = connect(chat_b, world.five)
    assert next_body(nine, topic, presence_event("connect", world.five)) == \
        {"type": "connect", "userId": str(world.five)}
    tab2 = connect(chat_b, world.five)
    # tab1 moves last, so the user's visible location is tab1's until tab1 goes away.
    tab1.send("/kafka/join-channel", {"channel_id": f"r-{world.room}"})
    assert friends_state(presence, world.five) == {str(world.five): f"r-{world.room}"}

    tab1.disconnect()
    tab1.close()
    wait_state(presence, {world.five: "home"})  # tab1 logged out, the user is still online (tab2)

    tab2.disconnect()  # DISCONNECT and then the transport close: still one logout
    tab2.close()
    wait_state(presence, {world.five: "offline"})

    # A new first session pushes connect; records of one user share a partition, so every
    # event caused by tab1/tab2 reaches nine before this one.
    connect(chat_b, world.five)
    events: list[Any] = []
    while not any(event["type"] == "disconnect" for event in events) or events[-1]["type"] != "connect":
        events.append(next_body(nine, topic, lambda body: body.get("userId") == str(world.five)))
    assert events == [{"type": "disconnect", "userId": str(world.five)},
                      {"type": "connect", "userId": str(world.five)}]
    # A wrong push from tab1 would be published a moment after its logout: allow it time.
    with pytest.raises(TimeoutError):
        next_body(nine, topic, lambda body: body.get("userId") == str(world.five), QUIET_S)


def test_voice_occupancy_and_signaling_out_over_stomp(
        presence: ServiceProcess, chat_b: RunningChatServer, world: World,
        connect: Callable[[RunningChatServer, int], ChatClient]) -> None:
    """Occupancy snapshots reach every subscriber verbatim; the signaling server's ``out`` reaches them too."""
    topic = f"/topic/community/{world.community}"
    nine = connect(chat_b, world.nine)
    nine.subscribe(topic)
    five = connect(chat_b, world.five)
    five.subscribe(topic)
    voice = world.voice_channel

    five.send("/kafka/community-signaling", {"community_id": str(world.community)})
    for client in (five, nine):
        assert next_body(client, topic, is_occupancy) == {}

    five.send("/kafka/signaling", {"channel_id": f"c-{voice}", "community_id": str(world.community)})
    for client in (five, nine):
        frame = client.wait_for(lambda fr: fr.command == "MESSAGE" and fr.header("destination") == topic and
                                is_occupancy(message_json(fr)) and message_json(fr) != {}, FRAME_TIMEOUT_S)
        assert frame.body == f'{{"{voice}":["{world.five}"]}}'.encode()  # exact bytes (§2.7)
    assert friends_state(presence, world.five) == {str(world.five): f"com{world.community},c-{voice}"}

    # The signaling server: user five's signaling socket closed.
    line = LineClient(presence.settings.presence_tcp_port, timeout=FRAME_TIMEOUT_S)
    try:
        assert line.request(signaling_line(world.five, str(world.community), f"c-{voice}")) == OK_REPLY
    finally:
        line.close()
    expected_out = {"type": "out", "communityId": str(world.community), "channelId": f"c-{voice}", "ids": []}
    for client in (nine, five):
        assert next_body(client, topic, lambda body: body.get("type") == "out") == expected_out

    # Presence forgot five in that channel: back at its text location, and the next snapshot
    # shows the channel empty.
    assert friends_state(presence, world.five) == {str(world.five): "home"}
    five.send("/kafka/community-signaling", {"community_id": str(world.community)})
    assert next_body(nine, topic, lambda body: is_occupancy(body) and body != {}) == {str(voice): []}


def test_dm_call_out_reaches_the_dm_topic(
        presence: ServiceProcess, chat_b: RunningChatServer, world: World,
        connect: Callable[[RunningChatServer, int], ChatClient]) -> None:
    """A DM call's ``signaling`` (community 'null', channel r-R) pushes ``out`` to ``/topic/direct/R``."""
    topic = f"/topic/direct/{world.room}"
    nine = connect(chat_b, world.nine)
    nine.subscribe(topic)
    line = LineClient(presence.settings.presence_tcp_port, timeout=FRAME_TIMEOUT_S)
    try:
        assert line.request(signaling_line(world.five, "null", f"r-{world.room}")) == OK_REPLY
    finally:
        line.close()
    assert next_body(nine, topic, lambda body: body.get("type") == "out") == \
        {"type": "out", "channelId": str(world.room), "ids": []}


def test_join_channel_uses_the_sessions_identity(
        presence: ServiceProcess, chat_b: RunningChatServer, world: World,
        connect: Callable[[RunningChatServer, int], ChatClient]) -> None:
    """join-channel moves the sender's own session, whatever user/session/type the payload names (W-5)."""
    victim, victim_session = fresh_user_ids(1)[0], f"victim{world.five}"
    line = LineClient(presence.settings.presence_tcp_port, timeout=FRAME_TIMEOUT_S)
    try:
        login = f"{{type='login', session_id='{victim_session}', user_id='{victim}', channel_id='null', " \
                "community_id='null', ids=null}"
        assert line.request(login) == OK_REPLY
        five = connect(chat_b, world.five)
        receipt = five.send("/kafka/join-channel", {"channel_id": f"r-{world.room}", "user_id": str(victim),
                                                    "type": "logout", "session_id": victim_session})
        assert receipt is not None and receipt.command == "RECEIPT"
        assert friends_state(presence, world.five, victim) == {str(world.five): f"r-{world.room}",
                                                               str(victim): "home"}

        outsider_room = fresh_user_ids(1)[0]
        set_room_members(presence.settings.redis_url, outsider_room, [world.nine, victim])
        other_tab = connect(chat_b, world.five)
        with pytest.raises(StompError) as refused:
            other_tab.send("/kafka/join-channel", {"channel_id": f"r-{outsider_room}"})
        assert refused.value.message == "forbidden"
        assert friends_state(presence, world.five, victim) == {str(world.five): f"r-{world.room}",
                                                               str(victim): "home"}
        # The victim's session is intact: logging it out reports the victim at home.
        assert line.request(f"{{type='logout', session_id='{victim_session}', user_id='null', "
                            "channel_id='null', community_id='null', ids=null}") == f"{victim},home\r\n".encode()
    finally:
        line.close()


def test_chat_works_while_presence_is_down_and_resyncs_when_it_returns(
        presence: ServiceProcess, chat_b: RunningChatServer, world: World,
        connect: Callable[[RunningChatServer, int], ChatClient]) -> None:
    """With presence stopped, CONNECT and a DM round trip work; when it returns, sync makes the users online."""
    topic = f"/topic/direct/{world.room}"
    presence.stop()
    try:
        nine = connect(chat_b, world.nine)
        nine.subscribe(topic)
        five = connect(chat_b, world.five)
        five.subscribe(topic)
        # Degraded mode: this node's own session count decides that five just came online.
        assert next_body(nine, topic, presence_event("connect", world.five)) == \
            {"type": "connect", "userId": str(world.five)}
        receipt = five.send("/kafka/send-direct-message", {"channelId": str(world.room), "content": "still here",
                                                           "name": "Five"})
        assert receipt is not None and receipt.command == "RECEIPT"
        body = next_body(nine, topic, lambda body: body.get("type") == "message")
        assert (body["userId"], body["message"], body["name"]) == (str(world.five), "still here", "Five")
        reply = nine.send("/kafka/send-direct-message", {"channelId": str(world.room), "content": "me too",
                                                         "name": "Nine"})
        assert reply is not None and reply.command == "RECEIPT"
        body = next_body(five, topic, lambda body: body.get("type") == "message" and body["userId"] == str(world.nine))
        assert body["message"] == "me too"
    finally:
        if not presence.alive:
            presence.start()

    # The sessions opened while presence was down reach it through the node's sync.
    wait_state(presence, {world.five: "home", world.nine: "home"})
