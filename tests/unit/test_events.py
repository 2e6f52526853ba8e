"""Kafka records → the exact STOMP push bodies of protocol.md §2.7."""

import json
from datetime import datetime

import pytest

from app.chat import events
from app.chat.model import TOPICS, ChatMessage

T = datetime(2022, 2, 21, 4, 5, 7, 123000)


def message(**overrides):
    values = dict(kind="direct", channel_id=17, user_id=5, content="hello", created_at=T,
                  id="65a1b2c3d4e5f60718293a4b", name="kim", profile_image=None)
    values.update(overrides)
    return ChatMessage(**values)


def only_push(topic, value):
    pushes = events.pushes_for(topic, value)
    assert len(pushes) == 1
    destination, body = pushes[0]
    return destination, json.loads(body)


def test_direct_message_push_has_string_values_only():
    destination, body = only_push(TOPICS["direct"], events.message_record(message()))
    assert destination == "/topic/direct/17"
    assert body == {"type": "message", "id": "65a1b2c3d4e5f60718293a4b", "userId": "5", "name": "kim",
                    "profileImage": None, "message": "hello", "time": "2022-02-21T04:05:07.123"}


def test_channel_message_goes_to_the_group_topic():
    record = events.message_record(message(kind="channel", channel_id=12, community_id=3))
    assert json.loads(record)["communityId"] == 3
    destination, body = only_push(TOPICS["channel"], record)
    assert destination == "/topic/group/12"
    assert body["type"] == "message"


def test_reply_push_has_parent_name_and_content_but_no_parent_id():
    reply = message(type="reply", parent_id="65a1b2c3d4e5f60718293a4c", parent_name="lee",
                    parent_content="first")
    destination, body = only_push(TOPICS["direct_etc"], events.reply_record(reply))
    assert destination == "/topic/direct/17"
    assert body == {"type": "reply", "id": reply.id, "userId": "5", "name": "kim", "profileImage": None,
                    "message": "hello", "time": "2022-02-21T04:05:07.123", "parentName": "lee",
                    "parentContent": "first"}


def test_modify_push_keeps_original_time():
    edited = message(kind="channel", channel_id=12, community_id=3, content="new",
                     edited_at=datetime(2022, 2, 21, 5, 0, 0))
    destination, body = only_push(TOPICS["channel_etc"], events.modify_record(edited))
    assert destination == "/topic/group/12"
    assert body == {"type": "modify", "id": edited.id, "userId": "5", "message": "new",
                    "time": "2022-02-21T04:05:07.123"}


def test_delete_and_typing_pushes():
    assert only_push(TOPICS["direct_etc"], events.delete_record(17, "abc")) \
        == ("/topic/direct/17", {"type": "delete", "id": "abc"})
    assert only_push(TOPICS["channel_etc"], events.typing_record(12, "kim")) \
        == ("/topic/group/12", {"type": "typing", "name": "kim"})


def test_connect_pushes_one_shared_body_to_every_room():
    record = events.presence_record("connect", 5, ["community/3", "direct/17", "bogus/1", "direct/x"])
    pushes = events.pushes_for(TOPICS["state"], record)
    assert [d for d, _ in pushes] == ["/topic/community/3", "/topic/direct/17"]
    assert pushes[0][1] is pushes[1][1]  # serialised once
    assert json.loads(pushes[0][1]) == {"type": "connect", "userId": "5"}


def test_voice_state_is_pushed_verbatim():
    state = '{"12":["5","9"],"14":[]}'
    pushes = events.pushes_for(TOPICS["state"], events.voice_state_record("before-enter", 3, state))
    assert pushes == [("/topic/community/3", state.encode())]


def test_exit_events():
    record = events.exit_community_record(3, "c-12", ["9"])
    assert only_push(TOPICS["state"], record) == (
        "/topic/community/3", {"type": "out", "communityId": "3", "channelId": "c-12", "ids": ["9"]})
    assert only_push(TOPICS["state"], events.exit_room_record(17, ["5", "9"])) == (
        "/topic/direct/17", {"type": "out", "channelId": "17", "ids": ["5", "9"]})


def test_file_record_is_forwarded_byte_for_byte():
    value = events.file_push_body(ChatMessage(
        kind="channel", channel_id=12, community_id=3, user_id=5, name="kim", content="/chat-server/files/k",
        created_at=datetime(2022, 2, 10, 14, 21, 5, 367000), type="image").with_id("m1"))
    assert value == (b'{"id":"m1","name":"kim","profileImage":null,"message":"/chat-server/files/k",'
                     b'"thumbnail":null,"userId":"5","channelId":12,"type":"community","fileType":"image",'
                     b'"time":"2022-02-10T14:21:05.367"}')
    pushes = events.pushes_for(TOPICS["file"], value)
    assert pushes == [("/topic/group/12", value)]
    body = json.loads(value)
    assert body["channelId"] == 12 and body["type"] == "community" and body["userId"] == "5"


@pytest.mark.parametrize("topic, value", [
    (TOPICS["direct"], b"not json"),
    (TOPICS["direct"], b'{"type":"message"}'),
    (TOPICS["direct_etc"], b'{"type":"weird","channelId":1}'),
    (TOPICS["state"], b'{"type":"weird"}'),
])
def test_malformed_records_raise_for_the_consumer_to_skip(topic, value):
    with pytest.raises((ValueError, KeyError, TypeError)):
        events.pushes_for(topic, value)


def test_non_ascii_content_is_kept_as_text():
    _, body = events.pushes_for(TOPICS["direct"], events.message_record(message(content="안녕")))[0]
    assert "안녕".encode() in body


def test_numbered_events_pass_their_seq_on_as_the_last_field_of_the_push():
    """Byte for byte: the original fields in their order, then ``seq`` (a number), so clients that
    do not know it ignore one trailing field; the decoded record names its room and number."""
    reply = message(type="reply", parent_id="65a1b2c3d4e5f60718293a4c", parent_name="lee",
                    parent_content="first", seq=8)
    cases = [
        (TOPICS["direct"], events.message_record(message(seq=7)),
         b'{"type":"message","id":"65a1b2c3d4e5f60718293a4b","userId":"5","name":"kim","profileImage":null,'
         b'"message":"hello","time":"2022-02-21T04:05:07.123","seq":7}', 7),
        (TOPICS["direct_etc"], events.reply_record(reply),
         b'{"type":"reply","id":"65a1b2c3d4e5f60718293a4b","userId":"5","name":"kim","profileImage":null,'
         b'"message":"hello","time":"2022-02-21T04:05:07.123","parentName":"lee","parentContent":"first",'
         b'"seq":8}', 8),
        (TOPICS["direct_etc"], events.modify_record(message(content="new"), 9),
         b'{"type":"modify","id":"65a1b2c3d4e5f60718293a4b","userId":"5","message":"new",'
         b'"time":"2022-02-21T04:05:07.123","seq":9}', 9),
        (TOPICS["direct_etc"], events.delete_record(17, "65a1b2c3d4e5f60718293a4b", 10),
         b'{"type":"delete","id":"65a1b2c3d4e5f60718293a4b","seq":10}', 10),
    ]
    for topic, record, push, seq in cases:
        decoded = events.decode(topic, record)
        assert decoded.pushes == [("/topic/direct/17", push)]
        assert (decoded.room, decoded.seq) == (("direct", 17), seq)
