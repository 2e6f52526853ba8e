"""Community channels with the original community service (issue 15 item 6): member lists are
the only membership source (``PUT community-user-list``; nothing lists channels), against a
real chat server (gunicorn, as `make run` starts it) on the embedded broker, database and Redis.

- The original web client's flow works: the members are PUT through the service endpoint, then
  @stomp/stompjs over sockjs-client connects, subscribes to the channel, sends, receives its
  message, and the channel's history holds it.
- A non-member of the community can neither post under it, nor receive its messages (live, or
  replayed with ``since-seq``), nor read them in history or the HTTP catch-up, also when another
  community uses the same channel id (each sees only its own messages there).
"""

import itertools
import json
import random
import urllib.error
import urllib.request

import pytest

from tests.conftest import MS, make_settings
from tests.support.chat import StompError, client_opener, message_json, run_js_script, running_chat_server

WAIT = 15_000 * MS
SERVICE_TOKEN = "channels-without-lists-service-token-0123456789"
ALICE, BOB, EVE, CAROL = 301, 302, 303, 304
_IDS = itertools.count(random.randrange(10**6, 10**7) * 100)


@pytest.fixture(scope="module")
def chat(embedded, log_dir):
    settings = make_settings(embedded, service_token=SERVICE_TOKEN)
    with running_chat_server(settings, log_dir, name="chat-channels") as server:
        yield server


@pytest.fixture
def clients(chat, token_for):
    with client_opener(token_for, WAIT) as open_client:
        yield lambda user_id: open_client(chat, user_id)


def put_members(chat, community, members):
    """What the original community service does: PUT the member list, nothing else."""
    request = urllib.request.Request(f"{chat.http_url}/chat-server/community-user-list/{community}",
                                     data=json.dumps(members).encode(), method="PUT",
                                     headers={"Content-Type": "application/json", "X-Service-Token": SERVICE_TOKEN})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def get(chat, token, query):
    request = urllib.request.Request(f"{chat.http_url}/chat-server/community?{query}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def history(chat, token, channel):
    status, body = get(chat, token, f"ch_id={channel}")
    assert status == 200, body
    return [item["message"] for item in body["result"]]


def post(client, community, channel, content):
    return client.send("/kafka/send-channel-message",
                       {"communityId": community, "channelId": channel, "content": content})


def next_messages(client, count, destination):
    return [message_json(client.receive_message(WAIT, destination))["message"] for _ in range(count)]


def messages_of(client, subscription, count):
    frames = (client.wait_for(lambda fr: fr.command == "MESSAGE" and fr.header("subscription") == subscription, WAIT)
              for _ in range(count))
    return [message_json(frame)["message"] for frame in frames]


def test_the_original_web_client_flow_works_with_member_lists_only(chat, token_for):
    community, channel = next(_IDS), next(_IDS)
    put_members(chat, community, [ALICE, BOB])
    result = run_js_script("channel_client.js", url=chat.sockjs_url, token=token_for(ALICE), userId=ALICE,
                           communityId=community, channelId=channel, content="hello channel")
    assert result["exit_status"] == 0, result
    assert result["connected"] and result["transport"] == "websocket"
    assert result["subscribed"] and result["sendReceipt"] == "send-1" and result["messageId"]
    (received,) = result["received"]
    assert (received["type"], received["id"], received["userId"], received["message"]) == \
        ("message", result["messageId"], str(ALICE), "hello channel")
    assert "communityId" not in received  # the push is the original's (§2.7), plus seq
    assert result["errors"] == []
    assert history(chat, token_for(BOB), channel) == ["hello channel"]  # another member reads it


def test_a_non_member_can_neither_post_nor_receive_nor_replay_nor_read(chat, clients, token_for):
    """Two communities use one channel id: each member sees only its own community's messages."""
    ours, theirs, channel = next(_IDS), next(_IDS), next(_IDS)
    put_members(chat, ours, [ALICE, BOB])
    put_members(chat, theirs, [EVE])
    topic = f"/topic/group/{channel}"
    alice, bob, eve = clients(ALICE), clients(BOB), clients(EVE)
    bob.subscribe(topic, "live")
    eve.subscribe(topic, "live")  # allowed: nothing lists the channel, and each delivery is filtered

    with pytest.raises(StompError) as refused:
        post(eve, ours, channel, "posing as a member")
    assert refused.value.message == "forbidden"

    post(alice, ours, channel, "ours 1")
    post(eve, theirs, channel, "theirs 1")
    post(alice, ours, channel, "ours 2")
    post(eve, theirs, channel, "theirs 2")
    # One channel's records stay in order: anything of the other community would come in between.
    assert next_messages(bob, 2, topic) == ["ours 1", "ours 2"]
    assert next_messages(eve, 2, topic) == ["theirs 1", "theirs 2"]

    eve.subscribe(topic, "resumed", headers={"since-seq": "0"})
    post(eve, theirs, channel, "theirs 3")
    # The replay (none of ours), then the live one.
    assert messages_of(eve, "resumed", 3) == ["theirs 1", "theirs 2", "theirs 3"]

    assert history(chat, token_for(BOB), channel) == ["ours 1", "ours 2"]
    assert history(chat, token_for(EVE), channel) == ["theirs 1", "theirs 2", "theirs 3"]
    status, _ = get(chat, token_for(CAROL), f"ch_id={channel}")  # a member of neither
    assert status == 403
    status, body = get(chat, token_for(EVE), f"ch_id={channel}&after_seq=0")
    assert status == 200 and [event["message"] for event in body["result"]["events"]] == \
        ["theirs 1", "theirs 2", "theirs 3"]
