"""The chat application with in-memory backends: authorization, store then publish through the
outbox relay (acknowledged once stored; published when the broker takes it; never undone),
idempotent SENDs, extras, presence hooks and notifications."""

import json
from datetime import datetime, timedelta

import pytest

from app.auth import Principal
from app.chat.model import TOPICS
from app.chat.access import Access
from app.chat.application import DESTINATIONS, ChatService
from app.chat.handlers import Authors, Messaging
from app.chat.notifications import Notifier
from app.chat.presence_flow import PresenceFlow
from app.chat.relay import Relay
from app.chat.room_memory import RoomMemory
from app.contracts import ClientConnection
from app.errors import BackendUnavailable, BacklogFull, BadRequest, Forbidden, NotFound
from app.settings import Settings
from tests.conftest import MS
from tests.fakes import (MemoryEventLog, memory_room_log, MemoryMembership, MemoryMessageStore, MemoryOutbox, MemoryPresence, MemoryProfiles,
                         MemoryReadMarkers, Profile, RecordingEventBus, RecordingHttp)

ALICE, BOB, EVE = 5, 9, 66
ROOM, COMMUNITY, CHANNEL, OTHER_CHANNEL, VOICE = 17, 3, 12, 40, 77
T0 = datetime(2022, 2, 21, 4, 5, 7, 123000)
WAIT = 5000 * MS


class Clock:
    def __init__(self):
        self.now = T0
        self.mono = 1000.0

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


class Harness:
    def __init__(self, *, profiles=None, notification_url="", store=None, max_backlog=100):
        self.settings = Settings.from_env({}, typing_interval_s=3.0, message_max_chars=100,
                                          notification_service_url=notification_url)
        self.clock = Clock()
        self.store = store or MemoryMessageStore()
        self.bus = RecordingEventBus()
        self.membership = MemoryMembership()
        self.membership.set_room(ROOM, [ALICE, BOB])
        self.membership.set_community(COMMUNITY, [ALICE, BOB], [CHANNEL])
        self.membership.set_community(8, [EVE], [OTHER_CHANNEL])
        self.markers = MemoryReadMarkers(self.store)
        self.presence = MemoryPresence()
        self.http = RecordingHttp()
        access = Access(self.membership)
        self.notifier = Notifier(self.settings, http=self.http, presence=self.presence,
                                 membership=self.membership)
        self.outbox = MemoryOutbox(self.store)
        self.event_log = MemoryEventLog()
        self.room_log = memory_room_log(self.event_log)
        self.relay = Relay(bus=self.bus, outbox=self.outbox, room_log=self.room_log, messages=self.store,
                           max_backlog=max_backlog,
                           stale_s=15, retention_s=86400, sweep_interval_s=0.01)
        self.messaging = Messaging(store=self.store, outbox=self.outbox, relay=self.relay, room_log=self.room_log,
                                   bus=self.bus,
                                   access=access, authors=Authors(profiles), observer=self.notifier,
                                   typing_interval_s=3.0, now=lambda: self.clock.now,
                                   monotonic=lambda: self.clock.mono)
        self.flow = PresenceFlow(presence=self.presence, bus=self.bus, membership=self.membership,
                                 read_markers=self.markers, access=access, node_id=lambda: "node-1",
                                 now=lambda: self.clock.now)
        self.memory = RoomMemory()
        self.app = ChatService(messaging=self.messaging, presence=self.flow, access=access, room_log=self.room_log,
                               message_max_chars=100, memory=self.memory)
        self._sessions = 0

    def connection(self, user_id):
        self._sessions += 1
        return ClientConnection(session_id=f"s{self._sessions}", principal=Principal(user_id, f"u{user_id}@x"),
                                node_id="node", transport="websocket")

    def send(self, connection, destination, idempotency_key=None, **payload):
        """SEND as the transport does it: the handler, then its Pending (if any) to the end, then
        (while the broker is up) until the relay published what was stored. The RECEIPT's headers."""
        pending = self.start(connection, destination, idempotency_key, **payload)
        headers = pending.wait() if pending is not None else None
        self.delivered()
        return headers

    def start(self, connection, destination, idempotency_key=None, **payload):
        """Only the handler: returns its Pending (or None)."""
        return self.app.send_handlers[f"/kafka/{destination}"](connection, json.dumps(payload).encode(),
                                                               idempotency_key)

    def delivered(self):
        """Wait for the relay to publish everything stored, unless the broker is down."""
        if not self.bus.fail:
            assert self.relay.flush(WAIT)

    def published(self, topic_name):
        return [json.loads(r.value) for r in self.bus.on(TOPICS[topic_name])]


@pytest.fixture
def h():
    return Harness()


@pytest.fixture
def alice(h):
    return h.connection(ALICE)


@pytest.fixture
def bob(h):
    return h.connection(BOB)


def the_message(h):
    (message,) = h.store.messages.values()
    return message


def test_all_thirteen_destinations_are_routed(h):
    assert set(h.app.send_handlers) == set(DESTINATIONS)
    assert len(DESTINATIONS) == 13


class TestSendMessage:
    def test_direct_message_is_stored_then_published_keyed_by_room(self, h, alice):
        h.send(alice, "send-direct-message", channelId=str(ROOM), content="hi", name="Alice",
               profileImage="http://img/a")
        stored = the_message(h)
        assert (stored.kind, stored.channel_id, stored.user_id, stored.content) == ("direct", ROOM, ALICE, "hi")
        assert stored.created_at == T0 and stored.name == "Alice" and stored.profile_image == "http://img/a"
        (record,) = h.bus.on(TOPICS["direct"])
        assert record.key == str(ROOM)
        assert json.loads(record.value)["id"] == stored.id

    @pytest.mark.parametrize("how", ["nonce", "header"])
    def test_a_repeated_idempotency_key_stores_nothing_new_and_answers_the_original(self, h, alice, how):
        def send(content):
            if how == "header":
                return h.send(alice, "send-direct-message", "key-1", channelId=ROOM, content=content)
            return h.send(alice, "send-direct-message", channelId=ROOM, content=content, nonce="key-1")

        first = send("hi")
        again = send("hi, retried")
        assert first == again == {"message-id": the_message(h).id}
        assert [r["content"] for r in h.published("direct")] == ["hi"]

    def test_the_same_key_from_another_author_is_another_message(self, h, alice, bob):
        h.send(alice, "send-direct-message", channelId=ROOM, content="a", nonce=7)
        h.send(bob, "send-direct-message", channelId=ROOM, content="b", nonce=7)
        assert sorted(m.content for m in h.store.messages.values()) == ["a", "b"]

    def test_a_reply_takes_a_key_too(self, h, alice):
        parent = h.store.insert(the_message_template())
        first = h.send(alice, "send-direct-reply", channelId=ROOM, content="r", parentId=parent.id, nonce="k")
        again = h.send(alice, "send-direct-reply", channelId=ROOM, content="r", parentId=parent.id, nonce="k")
        assert first == again and len(h.published("direct_etc")) == 1

    @pytest.mark.parametrize("nonce, error", [("", "nonce: must be a non-empty string"),
                                              ("x" * 65, "nonce: longer than 64 characters"),
                                              ([1], "nonce: must be a non-empty string")])
    def test_a_bad_key_is_refused_naming_it(self, h, alice, nonce, error):
        with pytest.raises(BadRequest) as refused:
            h.send(alice, "send-direct-message", channelId=ROOM, content="hi", nonce=nonce)
        assert refused.value.message == error and h.store.messages == {}

    def test_forged_user_id_and_client_id_are_ignored(self, h, alice):
        existing = h.store.insert(the_message_template())
        h.send(alice, "send-direct-message", channelId=ROOM, content="mine", userId=BOB, user_id=BOB,
               id=existing.id)
        assert h.store.get("direct", existing.id).content == "original"
        new = [m for m in h.store.messages.values() if m.id != existing.id]
        assert len(new) == 1 and new[0].user_id == ALICE and new[0].id != existing.id

    def test_channel_message_records_the_owning_community(self, h, alice):
        h.send(alice, "send-channel-message", channelId=CHANNEL, communityId=COMMUNITY, content="hey")
        assert the_message(h).community_id == COMMUNITY
        assert h.published("channel")[0]["communityId"] == COMMUNITY

    def test_name_and_avatar_come_from_profiles_when_configured(self, alice):
        h = Harness(profiles=MemoryProfiles({ALICE: Profile("Real Alice", "http://auth/a")}))
        h.send(h.connection(ALICE), "send-direct-message", channelId=ROOM, content="hi", name="Fake",
               profileImage="http://evil")
        assert (the_message(h).name, the_message(h).profile_image) == ("Real Alice", "http://auth/a")

    def test_profiles_down_falls_back_to_client_values(self):
        profiles = MemoryProfiles({ALICE: Profile("Real Alice", None)})
        profiles.down = True
        h = Harness(profiles=profiles)
        h.send(h.connection(ALICE), "send-direct-message", channelId=ROOM, content="hi", name="Alice")
        assert the_message(h).name == "Alice"

    @pytest.mark.parametrize("destination, payload, error", [
        ("send-direct-message", dict(channelId=99, content="x"), Forbidden),
        ("send-channel-message", dict(channelId=OTHER_CHANNEL, communityId=8, content="x"), Forbidden),
        ("send-channel-message", dict(channelId=555, communityId=COMMUNITY, content="x"), BadRequest),
        ("send-channel-message", dict(channelId=CHANNEL, communityId=8, content="x"), BadRequest),
        ("send-direct-message", dict(channelId="Optional(5)", content="x"), BadRequest),
        ("send-direct-message", dict(channelId=ROOM, content="x" * 101), BadRequest),
    ])
    def test_refusals_store_and_publish_nothing(self, h, alice, destination, payload, error):
        with pytest.raises(error):
            h.send(alice, destination, **payload)
        assert h.store.messages == {} and h.bus.records == []

    def test_uncached_channel_is_resolved_through_the_claimed_communitys_channel_list(self, h, alice):
        h.membership.unindexed[COMMUNITY] = [77]
        h.send(alice, "send-channel-message", channelId=77, communityId=COMMUNITY, content="hey")
        assert the_message(h).community_id == COMMUNITY
        with pytest.raises(BadRequest):  # a community whose list does not name the channel is not believed
            h.send(alice, "send-channel-message", channelId=78, communityId=COMMUNITY, content="hey")

    def test_while_the_broker_is_down_a_send_is_stored_acknowledged_and_published_later(self, h, alice):
        h.bus.fail = True
        receipt = h.send(alice, "send-direct-message", channelId=ROOM, content="hi")
        stored = the_message(h)
        assert receipt == {"message-id": stored.id} and h.bus.records == []
        assert h.relay.backlog == 1 and ("direct", stored.id) in h.store.unpublished
        h.bus.fail = False
        h.delivered()
        assert [r["id"] for r in h.published("direct")] == [stored.id]
        assert h.store.unpublished == {}

    def test_failed_store_publishes_nothing(self, h, alice):
        h.store.fail = True
        with pytest.raises(BackendUnavailable):
            h.send(alice, "send-direct-message", channelId=ROOM, content="hi")
        assert h.bus.records == []


class TestPipelinedSends:
    """Send and reply return a Pending at once; the group commit stores and publishes them in order."""

    @pytest.mark.parametrize("destination, extra", [("send-direct-message", {}), ("send-direct-reply", None)])
    def test_returns_before_the_store_and_is_stored_and_published_by_the_wait(self, h, alice, destination, extra):
        if extra is None:
            parent = h.store.insert(the_message_template())
            extra = {"parentId": parent.id}
        before = len(h.store.messages)
        pending = h.start(alice, destination, channelId=ROOM, content="hi", **extra)
        assert pending is not None
        assert len(h.store.messages) == before and h.bus.records == []  # the reader did not wait for either
        pending.wait()
        assert len(h.store.messages) == before + 1
        h.delivered()
        assert len(h.bus.records) == 1

    def test_sends_queued_together_are_stored_in_one_round_and_published_in_order(self, h, alice, bob):
        first = h.start(alice, "send-direct-message", channelId=ROOM, content="a1")
        pendings = [first] + [h.start(who, "send-direct-message", channelId=ROOM, content=text)
                              for who, text in ((bob, "b1"), (alice, "a2"), (bob, "b2"))]
        for pending in pendings:
            pending.wait()
        h.delivered()
        assert h.store.batches == [4]
        assert [r["content"] for r in h.published("direct")] == ["a1", "b1", "a2", "b2"]

    def test_one_message_that_fails_to_store_spares_the_rest_of_its_round(self):
        h = Harness(store=RefusingStore("poison"))
        alice = h.connection(ALICE)
        pendings = [h.start(alice, "send-direct-message", channelId=ROOM, content=text)
                    for text in ("ok1", "poison", "ok2")]
        pendings[0].wait()
        with pytest.raises(BackendUnavailable):
            pendings[1].wait()
        pendings[2].wait()
        h.delivered()
        assert sorted(m.content for m in h.store.messages.values()) == ["ok1", "ok2"]
        assert [r["content"] for r in h.published("direct")] == ["ok1", "ok2"]

    def test_the_receipt_carries_the_stored_message_id(self, h, alice):
        receipt = h.send(alice, "send-direct-message", channelId=ROOM, content="hi")
        assert receipt == {"message-id": the_message(h).id}

    def test_notification_comes_once_stored(self, h, alice, monkeypatch):
        notified = []
        monkeypatch.setattr(h.notifier, "message_stored", notified.append)
        pending = h.start(alice, "send-direct-message", channelId=ROOM, content="hi")
        assert notified == []
        pending.wait()
        assert [m.content for m in notified] == ["hi"]

    def test_modify_and_delete_finish_before_returning(self, h, alice):
        h.send(alice, "send-direct-message", channelId=ROOM, content="v1")
        posted = the_message(h)
        assert h.start(alice, "send-direct-modify", channelId=ROOM, id=posted.id, content="v2") is None
        h.delivered()
        assert h.store.get("direct", posted.id).content == "v2" and len(h.published("direct_etc")) == 1
        assert h.start(alice, "send-direct-delete", channelId=ROOM, id=posted.id) is None
        assert h.store.messages == {}

    def test_a_full_backlog_refuses_messages_edits_and_deletes_before_storing(self):
        h = Harness(max_backlog=1)
        alice = h.connection(ALICE)
        h.bus.fail = True
        h.send(alice, "send-direct-message", channelId=ROOM, content="v1")
        posted = the_message(h)
        for destination, payload in (("send-direct-message", {"content": "v2"}),
                                     ("send-direct-modify", {"id": posted.id, "content": "v2"}),
                                     ("send-direct-delete", {"id": posted.id})):
            with pytest.raises(BacklogFull):
                h.send(alice, destination, channelId=ROOM, **payload)
        assert list(h.store.messages.values()) == [posted] and h.outbox.changes == {}

    def test_typing_returns_the_ack_or_none_when_rate_limited(self, h, alice):
        assert h.start(alice, "send-direct-typing", channelId=ROOM, content="Alice") is not None
        assert h.start(alice, "send-direct-typing", channelId=ROOM, content="Alice") is None


class RefusingStore(MemoryMessageStore):
    """Refuses to store any message whose content is ``poison``; stores the others."""

    def __init__(self, poison):
        super().__init__()
        self.poison = poison

    def insert(self, message):
        if message.content == self.poison:
            raise BackendUnavailable()
        return super().insert(message)


def the_message_template():
    return __import__("app.chat.model", fromlist=["ChatMessage"]).ChatMessage(
        kind="direct", channel_id=ROOM, user_id=BOB, content="original", created_at=T0, name="Bob")


class TestReply:
    def test_parent_is_denormalised_from_the_stored_parent(self, h, alice, bob):
        h.send(bob, "send-direct-message", channelId=ROOM, content="question", name="Bob")
        parent = the_message(h)
        h.send(alice, "send-direct-reply", channelId=ROOM, content="answer", name="Alice", parentId=parent.id,
               parentName="forged", parentContent="forged")
        reply = next(m for m in h.store.messages.values() if m.id != parent.id)
        assert (reply.type, reply.parent_id, reply.parent_name, reply.parent_content) == \
            ("reply", parent.id, "Bob", "question")
        (record,) = h.published("direct_etc")
        assert record["type"] == "reply" and record["parentName"] == "Bob"

    def test_parent_name_uses_the_parent_authors_profile(self):
        h = Harness(profiles=MemoryProfiles({BOB: Profile("Robert", None)}))
        parent = h.store.insert(the_message_template())
        h.send(h.connection(ALICE), "send-direct-reply", channelId=ROOM, content="a", parentId=parent.id)
        reply = next(m for m in h.store.messages.values() if m.id != parent.id)
        assert reply.parent_name == "Robert"

    def test_parent_from_another_room_is_refused(self, h, alice):
        h.membership.set_room(18, [ALICE])
        h.send(alice, "send-direct-message", channelId=18, content="elsewhere")
        other = the_message(h)
        with pytest.raises(NotFound):
            h.send(alice, "send-direct-reply", channelId=ROOM, content="a", parentId=other.id)
        assert len(h.store.messages) == 1 and h.published("direct_etc") == []


class TestModifyDelete:
    @pytest.fixture
    def posted(self, h, alice):
        h.send(alice, "send-direct-message", channelId=ROOM, content="v1")
        return the_message(h)

    def test_author_modifies_keeping_time_and_marking_edited(self, h, alice, posted):
        h.clock.advance(60)
        h.send(alice, "send-direct-modify", channelId=ROOM, id=posted.id, content="v2")
        edited = h.store.get("direct", posted.id)
        assert (edited.content, edited.created_at, edited.edited_at) == ("v2", T0, T0 + timedelta(seconds=60))
        (record,) = h.published("direct_etc")
        assert (record["type"], record["content"], record["time"]) == ("modify", "v2", "2022-02-21T04:05:07.123")

    def test_file_messages_cannot_be_edited(self, h, alice):
        from dataclasses import replace
        image = h.store.insert(replace(the_message_template(), user_id=ALICE, type="image",
                                       content="/chat-server/file/abc"))
        with pytest.raises(BadRequest):
            h.send(alice, "send-direct-modify", channelId=ROOM, id=image.id, content="text")
        assert h.store.get("direct", image.id) == image

    def test_only_the_author_may_modify(self, h, bob, posted):
        with pytest.raises(Forbidden):
            h.send(bob, "send-direct-modify", channelId=ROOM, id=posted.id, content="hacked", userId=ALICE)
        assert h.store.get("direct", posted.id).content == "v1" and h.published("direct_etc") == []

    def test_an_edit_made_while_the_broker_is_down_is_kept_and_published_later(self, h, alice, posted):
        h.bus.fail = True
        h.send(alice, "send-direct-modify", channelId=ROOM, id=posted.id, content="v2")
        assert h.store.get("direct", posted.id).content == "v2" and len(h.outbox.changes) == 1
        h.bus.fail = False
        h.delivered()
        assert [r["content"] for r in h.published("direct_etc")] == ["v2"] and h.outbox.changes == {}

    def test_an_edit_of_a_message_gone_meanwhile_records_nothing(self, h, alice, posted):
        h.store.delete("direct", posted.id, ALICE)
        h.store.messages[("direct", posted.id)] = posted  # the read still finds it ...
        h.store.edit = lambda *args: None  # ... but the edit does not
        with pytest.raises(NotFound):
            h.send(alice, "send-direct-modify", channelId=ROOM, id=posted.id, content="v2")
        assert h.outbox.changes == {} and h.published("direct_etc") == []

    def test_author_deletes(self, h, alice, posted):
        h.send(alice, "send-direct-delete", channelId=ROOM, id=posted.id)
        assert h.store.messages == {}
        assert h.published("direct_etc") == [{"type": "delete", "id": posted.id, "channelId": ROOM, "seq": 2}]

    def test_only_the_author_may_delete(self, h, bob, posted):
        with pytest.raises(Forbidden):
            h.send(bob, "send-direct-delete", channelId=ROOM, id=posted.id, userId=ALICE)
        assert h.store.get("direct", posted.id) == posted

    def test_a_delete_made_while_the_broker_is_down_is_kept_and_published_later(self, h, alice, posted):
        h.bus.fail = True
        h.send(alice, "send-direct-delete", channelId=ROOM, id=posted.id)
        assert h.store.get("direct", posted.id) is None
        h.bus.fail = False
        h.delivered()
        assert h.published("direct_etc") == [{"type": "delete", "id": posted.id, "channelId": ROOM, "seq": 2}]

    def test_unknown_or_foreign_room_message_is_not_found(self, h, alice, posted):
        with pytest.raises(NotFound):
            h.send(alice, "send-direct-delete", channelId=ROOM, id="0" * 24)
        h.membership.set_room(18, [ALICE])
        with pytest.raises(NotFound):
            h.send(alice, "send-direct-delete", channelId=18, id=posted.id)
        assert h.store.get("direct", posted.id) == posted

    def test_modify_in_a_room_one_left_is_forbidden(self, h, alice, posted):
        h.membership.set_room(ROOM, [BOB])
        with pytest.raises(Forbidden):
            h.send(alice, "send-direct-modify", channelId=ROOM, id=posted.id, content="v2")


class TestTyping:
    def test_typing_is_rate_limited_per_user_and_room(self, h, alice, bob):
        h.send(alice, "send-channel-typing", channelId=CHANNEL, content="Alice")
        h.send(alice, "send-channel-typing", channelId=CHANNEL, content="Alice")  # dropped, no error
        h.send(bob, "send-channel-typing", channelId=CHANNEL, content="Bob")
        h.send(h.connection(ALICE), "send-channel-typing", channelId=CHANNEL, content="Alice")  # same user
        h.clock.advance(3.0)
        h.send(alice, "send-channel-typing", channelId=CHANNEL, content="Alice")
        assert [r["name"] for r in h.published("channel_etc")] == ["Alice", "Bob", "Alice"]
        assert h.store.messages == {}

    def test_typing_requires_membership(self, h):
        with pytest.raises(Forbidden):
            h.send(h.connection(EVE), "send-direct-typing", channelId=ROOM, content="Eve")
        assert h.bus.records == []

    def test_typing_ignores_a_payload_type(self, h, alice, bob):
        h.send(bob, "send-direct-message", channelId=ROOM, content="keep me")
        target = the_message(h)
        h.send(alice, "send-direct-typing", channelId=ROOM, content="Alice", type="delete", id=target.id)
        assert h.store.get("direct", target.id) == target
        assert h.published("direct_etc") == [{"type": "typing", "channelId": ROOM, "name": "Alice"}]


class TestSubscriptions:
    @pytest.mark.parametrize("destination", [f"/topic/direct/{ROOM}", f"/topic/group/{CHANNEL}",
                                             f"/topic/community/{COMMUNITY}"])
    def test_members_may_subscribe(self, h, alice, destination):
        h.app.authorize_subscription(alice, destination)

    @pytest.mark.parametrize("destination, error", [
        (f"/topic/direct/{ROOM}", Forbidden), (f"/topic/group/{CHANNEL}", Forbidden),
        (f"/topic/community/{COMMUNITY}", Forbidden),
        ("/topic/**", NotFound), ("/topic/direct/17/x", NotFound),
    ])
    def test_others_may_not(self, h, destination, error):
        with pytest.raises(error):
            h.app.authorize_subscription(h.connection(EVE), destination)

    @pytest.mark.parametrize("destination", [f"/topic/direct/0{ROOM}", "/topic/direct/0", f"/topic/group/+{CHANNEL}"])
    def test_only_canonical_ids_name_a_room(self, h, alice, destination):
        with pytest.raises(NotFound):
            h.app.authorize_subscription(alice, destination)


class TestPresenceHooks:
    def test_first_session_announces_connect_last_announces_disconnect(self, h):
        first, second = h.connection(ALICE), h.connection(ALICE)
        h.app.connected(first)
        h.app.connected(second)
        h.send(second, "join-channel", channel_id=f"r-{ROOM}")
        h.app.disconnected(first)
        h.app.disconnected(second)
        state = h.published("state")
        assert [(r["type"], r["userId"]) for r in state] == [("connect", "5"), ("disconnect", "5")]
        assert state[0]["ids"] == [f"community/{COMMUNITY}", f"direct/{ROOM}"]
        assert h.presence.calls[0] == ("login", first.session_id, ALICE, "node-1")

    def test_join_marks_the_location_left_and_entered(self, h, alice):
        h.app.connected(alice)
        h.send(alice, "join-channel", channel_id=f"r-{ROOM}", user_id=BOB, type="logout")
        h.clock.advance(10)
        h.send(alice, "join-channel", channel_id=f"c-{CHANNEL}")
        h.clock.advance(10)
        h.send(alice, "join-channel", channel_id="home")
        assert h.presence.calls[1] == ("move", ALICE, alice.session_id, f"r-{ROOM}")
        assert h.markers.read == {f"r-{ROOM}": {ALICE: T0 + timedelta(seconds=10)},
                                  f"c-{CHANNEL}": {ALICE: T0 + timedelta(seconds=20)}}
        assert "home" not in h.markers.read

    def test_disconnect_marks_the_location(self, h, alice):
        h.app.connected(alice)
        h.send(alice, "join-channel", channel_id=f"c-{CHANNEL}")
        h.clock.advance(5)
        h.app.disconnected(alice)
        assert h.markers.read[f"c-{CHANNEL}"][ALICE] == T0 + timedelta(seconds=5)

    @pytest.mark.parametrize("location, error", [(f"r-{ROOM}", Forbidden), (f"c-{CHANNEL}", Forbidden)])
    def test_join_requires_membership(self, h, location, error):
        eve = h.connection(EVE)
        with pytest.raises(error):
            h.send(eve, "join-channel", channel_id=location)
        assert not any(call[0] == "move" for call in h.presence.calls)

    def test_presence_down_connect_and_messages_still_work(self, h, alice):
        h.presence.down = True
        h.app.connected(alice)
        h.send(alice, "join-channel", channel_id=f"r-{ROOM}")
        h.send(alice, "send-direct-message", channelId=ROOM, content="still here")
        h.app.disconnected(alice)
        assert [r["type"] for r in h.published("state")] == ["connect", "disconnect"]
        assert len(h.published("direct")) == 1
        assert ALICE in h.markers.read[f"r-{ROOM}"]

    def test_resync_sends_live_sessions(self, h, alice, bob):
        h.app.connected(alice)
        h.app.connected(bob)
        h.app.disconnected(alice)
        h.flow.resync()
        assert h.presence.calls[-1] == ("sync", "node-1", {bob.session_id: BOB})

    def test_kafka_down_does_not_break_connect(self, h, alice):
        h.bus.fail = True
        h.app.connected(alice)
        h.app.disconnected(alice)

    def test_community_signaling_publishes_the_snapshot(self, h, alice):
        h.presence.login("bob-session", BOB, "node-2")  # occupancy lists online users only
        h.presence.voice[COMMUNITY] = {VOICE: ["9"]}
        h.send(alice, "community-signaling", community_id=str(COMMUNITY), user_id=BOB)
        assert h.presence.calls[-1] == ("before_enter", ALICE, COMMUNITY)
        assert h.published("state") == [{"type": "before-enter", "communityId": "3", "state": '{"77":["9"]}'}]

    def test_voice_signaling_enters_with_the_session_identity(self, h, alice):
        h.app.connected(alice)  # occupancy lists online users only
        h.send(alice, "signaling", community_id=COMMUNITY, channel_id=f"c-{VOICE}", user_id=BOB)
        assert h.presence.calls[-1] == ("enter", ALICE, COMMUNITY, VOICE)
        assert json.loads(h.published("state")[-1]["state"]) == {"77": ["5"]}  # after the connect push

    def test_signaling_requires_community_membership(self, h):
        with pytest.raises(Forbidden):
            h.send(h.connection(EVE), "community-signaling", community_id=COMMUNITY)
        with pytest.raises(BadRequest):
            h.send(h.connection(ALICE), "signaling", community_id=COMMUNITY, channel_id=f"c-{OTHER_CHANNEL}")
        assert h.published("state") == []

    def test_signaling_with_presence_down_is_an_error(self, h, alice):
        h.presence.down = True
        with pytest.raises(BackendUnavailable):
            h.send(alice, "community-signaling", community_id=COMMUNITY)


class TestNotifications:
    def test_members_not_viewing_the_room_are_notified(self):
        h = Harness(notification_url="http://notify/notification-server/")
        h.membership.set_room(ROOM, [ALICE, BOB, 30])
        h.presence.locations[30] = f"r-{ROOM}"
        h.send(h.connection(ALICE), "send-direct-message", channelId=ROOM, content="hi", name="Alice")
        h.notifier.join(timeout=5)
        (url, body), = h.http.posts
        assert url == "http://notify/notification-server/direct"
        assert body == {"userId": ALICE, "username": "Alice", "type": "text", "content": "hi",
                        "roomName": "DM", "roomId": ROOM, "target": f"[{BOB}]"}

    def test_presence_down_notifies_every_other_member(self):
        h = Harness(notification_url="http://notify")
        h.presence.down = True
        h.send(h.connection(ALICE), "send-channel-message", channelId=CHANNEL, communityId=COMMUNITY, content="x")
        h.notifier.join(timeout=5)
        (url, body), = h.http.posts
        assert url == "http://notify/channel"
        assert (body["target"], body["channelName"], body["communityId"], body["channelId"]) == \
            (f"[{BOB}]", "CHANNEL", COMMUNITY, CHANNEL)

    def test_a_failing_notification_service_never_fails_the_send(self):
        h = Harness(notification_url="http://notify")
        h.http.fail = True
        h.send(h.connection(ALICE), "send-direct-message", channelId=ROOM, content="hi")
        h.notifier.join(timeout=5)
        assert len(h.published("direct")) == 1

    def test_no_url_no_notification(self, h, alice):
        h.send(alice, "send-direct-message", channelId=ROOM, content="hi")
        h.notifier.join(timeout=5)
        assert h.http.posts == []


class TestFileMessages:
    """``post_file``: an uploaded file's message takes the SEND pipeline (group commit, publish, ack)."""

    @staticmethod
    def file_message():
        return __import__("app.chat.model", fromlist=["ChatMessage"]).ChatMessage(
            kind="direct", channel_id=ROOM, user_id=ALICE, content="/chat-server/file/k", created_at=T0,
            name="Alice", type="image")

    def test_stores_and_publishes_the_file_push_once_without_a_notification(self):
        h = Harness(notification_url="http://notify")
        stored = h.messaging.post_file(self.file_message())
        assert h.store.messages[("direct", stored.id)] == stored and h.store.batches == [1]
        h.delivered()
        [record] = h.bus.records
        assert (record.topic, record.key) == (TOPICS["file"], str(ROOM))
        assert json.loads(record.value) == {
            "id": stored.id, "name": "Alice", "profileImage": None, "message": "/chat-server/file/k",
            "thumbnail": None, "userId": str(ALICE), "channelId": ROOM, "type": "direct", "fileType": "image", "seq": 1,
            "time": "2022-02-21T04:05:07.123"}
        h.notifier.join(timeout=5)
        assert h.http.posts == []

    def test_while_the_broker_is_down_the_file_message_is_stored_and_published_later(self, h):
        h.bus.fail = True
        stored = h.messaging.post_file(self.file_message())
        assert h.store.messages[("direct", stored.id)] == stored and h.bus.records == []
        h.bus.fail = False
        h.delivered()
        assert [json.loads(r.value)["id"] for r in h.bus.on(TOPICS["file"])] == [stored.id]

    def test_a_failed_store_raises_and_publishes_nothing(self, h):
        h.store.fail = True
        with pytest.raises(BackendUnavailable):
            h.messaging.post_file(self.file_message())
        assert h.bus.records == []


class TestServiceApi:
    """The presence → chat endpoints with a recording bus (flask test client, no network)."""

    @staticmethod
    def client(h, service_token=""):
        from flask import Flask

        from app.chat.http import create_service_blueprint
        from app.http_envelope import register_error_handlers
        web = Flask("test")
        register_error_handlers(web)
        settings = Settings.from_env({}, service_token=service_token)
        web.register_blueprint(create_service_blueprint(settings, bus=h.bus, offline=h.flow))
        return web.test_client()

    def test_exit_community_and_room(self, h):
        client = self.client(h)
        response = client.post("/chat-server/signaling-list-community", data=json.dumps(
            {"type": "out", "communityId": "3", "channelId": "c-12", "ids": ["9", 5]}))  # no content type
        assert (response.status_code, response.data) == (200, b"")
        response = client.post("/chat-server/signaling-list-direct",
                               json={"type": "out", "channelId": "17", "ids": ["5"]})
        assert response.status_code == 200
        assert h.published("state") == [
            {"type": "exit-community", "typeForExit": "out", "communityId": "3", "channelId": "c-12",
             "ids": ["9", "5"]},
            {"type": "exit-room", "typeForExit": "out", "channelId": "17", "ids": ["5"]}]
        assert [r.key for r in h.bus.records] == ["3", "17"]

    @pytest.mark.parametrize("path, body, message", [
        ("signaling-list-community", {"communityId": "3", "channelId": "12"}, "channelId: must be c-<voiceChannelId>"),
        ("signaling-list-community", {"communityId": "x", "channelId": "c-1"}, "communityId: must be a positive integer"),
        ("signaling-list-direct", {"channelId": "17", "ids": "5"}, "ids: must be a list of user ids"),
        ("presence-offline", {"userId": 5, "location": "home'; drop"}, "location: must be a presence location"),
        ("presence-offline", [1], "body: must be a JSON object"),
    ])
    def test_bad_bodies_are_400_naming_the_field(self, h, path, body, message):
        response = self.client(h).post(f"/chat-server/{path}", json=body)
        assert response.status_code == 400 and response.get_json()["message"] == message
        assert h.bus.records == []

    def test_presence_offline_marks_and_announces(self, h):
        response = self.client(h).post("/chat-server/presence-offline", json={"userId": ALICE, "location": "r-17"})
        assert response.status_code == 200
        assert h.markers.read["r-17"][ALICE] == T0
        assert [r["type"] for r in h.published("state")] == ["disconnect"]

    def test_service_token_is_required_when_configured(self, h):
        client = self.client(h, service_token="s3cret")
        body = {"type": "out", "channelId": "17", "ids": []}
        assert client.post("/chat-server/signaling-list-direct", json=body).status_code == 401
        assert client.post("/chat-server/signaling-list-direct", json=body,
                           headers={"X-Service-Token": "wrong"}).status_code == 401
        assert client.post("/chat-server/signaling-list-direct", json=body,
                           headers={"X-Service-Token": "s3cret"}).status_code == 200

    @pytest.mark.parametrize("path, body", [
        ("signaling-list-community", {"type": "out", "communityId": "3", "channelId": "c-12", "ids": []}),
        ("signaling-list-direct", {"channelId": "17"}),
        ("presence-offline", {"userId": ALICE, "location": "home"}),
    ])
    def test_without_token_only_the_allowed_networks_never_a_user_token(self, h, path, body):
        """Issue 14: a user token forged voice exits and offline marks, from anywhere."""
        from app.auth import mint_token
        client = self.client(h)
        remote = {"REMOTE_ADDR": "192.0.2.7"}
        user = {"Authorization": f"Bearer {mint_token(Settings().jwt_secret, ALICE)}"}
        assert client.post(f"/chat-server/{path}", json=body, environ_base=remote).status_code == 403
        assert client.post(f"/chat-server/{path}", json=body, environ_base=remote, headers=user).status_code == 403
        assert client.post(f"/chat-server/{path}", json=body, headers=user).status_code == 403
        assert h.bus.records == [] and h.markers.read == {}
        assert client.post(f"/chat-server/{path}", json=body).status_code == 200
        assert client.post(f"/chat-server/{path}", json=body, environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
