"""Channels without channel lists (issue 15 item 6, app/chat/channel_scope.py): a channel event
belongs to the community its author is a verified member of, and only that community's members
see it, whether or not a channel list names the channel's owner; lists stay the stricter source."""

import json

import pytest

from app.chat.channel_scope import NOBODY
from app.chat.events import decode
from app.chat.model import TOPICS
from app.errors import BadRequest, Forbidden, NotFound
from tests.unit.test_handlers import ALICE, BOB, EVE, Harness

CHANNEL = 500  # no channel list names it
MINE, THEIRS = 30, 31  # two communities, member lists only


@pytest.fixture
def h():
    harness = Harness()
    harness.membership.set_community(MINE, [ALICE, BOB])
    harness.membership.set_community(THEIRS, [EVE])
    return harness


@pytest.fixture
def alice(h):
    return h.connection(ALICE)


@pytest.fixture
def eve(h):
    return h.connection(EVE)


def post(h, connection, community, content):
    return h.send(connection, "send-channel-message", channelId=CHANNEL, communityId=community,
                  content=content)["message-id"]


def test_a_member_posts_in_an_unlisted_channel_under_the_community_it_names(h, alice):
    post(h, alice, MINE, "hi")
    (stored,) = h.store.messages.values()
    assert (stored.channel_id, stored.community_id) == (CHANNEL, MINE)
    assert json.loads(h.bus.on(TOPICS["channel"])[0].value)["communityId"] == MINE


def test_a_non_member_cannot_post_under_a_community(h, eve):
    with pytest.raises(Forbidden):
        post(h, eve, MINE, "let me in")
    assert h.store.messages == {}


def test_a_channel_write_must_name_a_community_when_nothing_lists_the_channel(h, alice):
    with pytest.raises(BadRequest):
        h.send(alice, "send-channel-message", channelId=CHANNEL, content="hi")
    with pytest.raises(NotFound):  # an edit of nothing, naming no community: the channel is unknown
        h.send(alice, "send-channel-modify", channelId=CHANNEL, communityId=None, id="a" * 24, content="x")


def test_anyone_may_subscribe_to_an_unlisted_channel_but_each_event_goes_to_its_community_only(h, alice, eve):
    h.app.authorize_subscription(eve, f"/topic/group/{CHANNEL}")  # no error: deliveries are filtered
    scope = h.app._access.scope
    assert scope.audience(CHANNEL, MINE) == {ALICE, BOB}
    assert scope.audience(CHANNEL, THEIRS) == {EVE}
    assert scope.audience(CHANNEL, None) == NOBODY


def test_two_communities_claiming_one_channel_id_each_replay_only_their_own(h, alice, eve):
    post(h, alice, MINE, "ours")
    post(h, eve, THEIRS, "theirs")
    destination = f"/topic/group/{CHANNEL}"
    mine = [json.loads(body)["message"] for _, body in h.app.resume(alice, destination, 0).bodies]
    theirs = [json.loads(body)["message"] for _, body in h.app.resume(eve, destination, 0).bodies]
    assert (mine, theirs) == (["ours"], ["theirs"])


def test_a_resume_from_memory_reads_no_log_and_keeps_the_same_scope(h, alice, eve):
    post(h, alice, MINE, "ours")
    post(h, eve, THEIRS, "theirs")
    h.delivered()
    for record in h.bus.records:  # what the fan-out consumer remembers as it pushes
        h.memory.remember(decode(record.topic, record.value))
    h.event_log.after_calls.clear()
    destination = f"/topic/group/{CHANNEL}"
    mine = [json.loads(body)["message"] for _, body in h.app.resume(alice, destination, 0).bodies]
    theirs = [json.loads(body)["message"] for _, body in h.app.resume(eve, destination, 0).bodies]
    assert (mine, theirs) == (["ours"], ["theirs"]) and h.event_log.after_calls == []


def test_a_resume_beyond_the_bound_is_a_reset_even_when_memory_holds_it(h, alice):
    for n in range(3):
        post(h, alice, MINE, f"m{n}")
    h.delivered()
    for record in h.bus.records:
        h.memory.remember(decode(record.topic, record.value))
    h.room_log.replay_max_events = 2
    resumed = h.app.resume(alice, f"/topic/group/{CHANNEL}", 0)
    assert resumed.reset and json.loads(resumed.bodies[0][1]) == {"type": "reset", "seq": 3}


def test_a_channel_list_is_the_stricter_source(h, alice, eve):
    post(h, eve, THEIRS, "before the list")
    h.membership.set_community_channels(MINE, [CHANNEL])
    with pytest.raises(BadRequest):  # the list names another owner
        post(h, eve, THEIRS, "after the list")
    with pytest.raises(Forbidden):  # subscribing to a listed channel needs its owner's membership
        h.app.authorize_subscription(eve, f"/topic/group/{CHANNEL}")
    scope = h.app._access.scope
    assert scope.audience(CHANNEL, THEIRS) == NOBODY  # what another community posted before: nobody's
    assert scope.audience(CHANNEL, None) == {ALICE, BOB}  # an unscoped (older) event: the owner's
    with pytest.raises(BadRequest):  # a community whose list does not name the channel
        h.membership.set_community_channels(THEIRS, [999])
        post(h, eve, THEIRS, "x")


def test_edits_and_deletes_without_a_community_take_their_messages_and_keep_it_on_the_record(h, alice, eve):
    message_id = post(h, alice, MINE, "typo")
    h.send(alice, "send-channel-modify", channelId=CHANNEL, id=message_id, content="fixed")
    with pytest.raises(Forbidden):  # naming a community it is not a member of
        h.send(alice, "send-channel-delete", channelId=CHANNEL, communityId=THEIRS, id=message_id)
    h.send(alice, "send-channel-delete", channelId=CHANNEL, id=message_id)
    records = [json.loads(r.value) for r in h.bus.on(TOPICS["channel_etc"])]
    assert [(r["type"], r["communityId"]) for r in records] == [("modify", MINE), ("delete", MINE)]
    assert [decode(TOPICS["channel_etc"], r.value).channel_scope for r in h.bus.on(TOPICS["channel_etc"])] \
        == [(CHANNEL, MINE)] * 2


def test_a_removed_member_cannot_edit_under_the_community_any_more(h, alice):
    message_id = post(h, alice, MINE, "mine")
    h.membership.set_community(MINE, [BOB])
    with pytest.raises(Forbidden):
        h.send(alice, "send-channel-delete", channelId=CHANNEL, id=message_id)


def test_a_reply_never_quotes_another_communitys_message(h, alice, eve):
    theirs = post(h, eve, THEIRS, "secret")
    with pytest.raises(NotFound):
        h.send(alice, "send-channel-reply", channelId=CHANNEL, communityId=MINE, parentId=theirs, content="re")


def test_typing_without_a_community_is_scoped_by_the_community_page_subscribed_or_dropped(h, alice):
    h.send(alice, "send-channel-typing", channelId=CHANNEL, content="Alice")
    assert h.bus.on(TOPICS["channel_etc"]) == []  # no community to show it to
    h.app.authorize_subscription(alice, f"/topic/community/{MINE}")
    h.send(alice, "send-channel-typing", channelId=CHANNEL, content="Alice")
    (record,) = [json.loads(r.value) for r in h.bus.on(TOPICS["channel_etc"])]
    assert (record["type"], record["communityId"]) == ("typing", MINE)


def test_join_channel_into_an_unlisted_channel_is_allowed(h, eve):
    h.send(eve, "join-channel", channel_id=f"c-{CHANNEL}")
