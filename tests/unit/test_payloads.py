"""SEND body validation: typed commands out, ``BadRequest`` naming the field otherwise."""

import json

import pytest

from app.chat import payloads
from app.errors import BadRequest

MAX = 50
MSG_ID = "65a1b2c3d4e5f60718293a4b"


def body(**fields):
    return json.dumps(fields).encode()


def bad(call, *args):
    with pytest.raises(BadRequest) as info:
        call(*args)
    return info.value.message


class TestIds:
    def test_numeric_strings_are_accepted(self):
        cmd = payloads.parse_send_message(body(channelId="17", content="hi"), "direct", MAX)
        assert cmd.room.channel_id == 17

    def test_ints_are_accepted(self):
        cmd = payloads.parse_send_message(body(channelId=12, communityId=3, content="hi"), "channel", MAX)
        assert (cmd.room.channel_id, cmd.room.community_id) == (12, 3)

    @pytest.mark.parametrize("value", ["Optional(5)", "5.0", "-5", "0", 0, -1, 5.5, True, [5], {"a": 5}, "",
                                       "99999999999999999999", 2**63])
    def test_anything_else_is_refused_naming_the_field(self, value):
        message = bad(payloads.parse_send_message, body(channelId=value, content="hi"), "direct", MAX)
        assert message == "channelId: must be a positive integer"

    def test_missing_channel_id_is_named(self):
        assert bad(payloads.parse_send_message, body(content="hi"), "direct", MAX) == "channelId: required"

    def test_channel_message_requires_community_id(self):
        message = bad(payloads.parse_send_message, body(channelId=12, content="hi"), "channel", MAX)
        assert message == "communityId: required"

    def test_channel_modify_does_not_require_community_id(self):
        cmd = payloads.parse_modify(body(channelId=12, id=MSG_ID, content="x"), "channel", MAX)
        assert cmd.room.community_id is None


class TestContent:
    @pytest.mark.parametrize("value, expected", [
        (None, "content: required"),
        (5, "content: must be a string"),
        ("   ", "content: must not be empty"),
        ("x" * (MAX + 1), f"content: longer than {MAX} characters"),
    ])
    def test_invalid_content_is_named(self, value, expected):
        fields = {"channelId": 1} if value is None else {"channelId": 1, "content": value}
        assert bad(payloads.parse_send_message, body(**fields), "direct", MAX) == expected

    def test_content_at_the_limit_is_accepted(self):
        cmd = payloads.parse_send_message(body(channelId=1, content="x" * MAX), "direct", MAX)
        assert len(cmd.content) == MAX

    def test_name_and_image_must_be_bounded_strings(self):
        assert bad(payloads.parse_send_message, body(channelId=1, content="a", name=5), "direct", MAX) \
            == "name: must be a string"
        long_name = "n" * (payloads.NAME_MAX_CHARS + 1)
        assert bad(payloads.parse_send_message, body(channelId=1, content="a", name=long_name), "direct", MAX) \
            .startswith("name: longer than")
        long_url = "u" * (payloads.URL_MAX_CHARS + 1)
        assert bad(payloads.parse_send_message, body(channelId=1, content="a", profileImage=long_url),
                   "direct", MAX).startswith("profileImage: longer than")


class TestBodies:
    @pytest.mark.parametrize("raw", [b"", b"[1,2]", b'"text"', b"null"])
    def test_non_object_bodies_are_refused(self, raw):
        assert bad(payloads.parse_send_message, raw, "direct", MAX) == "body: must be a JSON object"

    @pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b'{"channelId":1', b"[" * 30_000 + b"]" * 30_000,
                                     b'{"a":' * 33 + b"1" + b"}" * 33])
    def test_bodies_that_are_not_json_are_malformed(self, raw):
        assert bad(payloads.parse_send_message, raw, "direct", MAX) == "body: malformed JSON"

    def test_unknown_and_server_owned_fields_are_ignored(self):
        raw = body(channelId=1, content="hi", userId=999, user_id=999, id=MSG_ID, type="delete",
                   localDateTime="2020-01-01T00:00", read={"1": True}, thumbnail="x", extra={"a": 1})
        cmd = payloads.parse_send_message(raw, "direct", MAX)
        assert cmd == payloads.SendMessage(payloads.RoomRef("direct", 1, None), "hi", None, None)


class TestReplyModifyDelete:
    def test_reply_needs_a_message_id_parent(self):
        assert bad(payloads.parse_send_reply, body(channelId=1, content="a"), "direct", MAX) == "parentId: required"
        assert bad(payloads.parse_send_reply, body(channelId=1, content="a", parentId="nope"), "direct", MAX) \
            == "parentId: must be a message id"

    def test_reply_ignores_client_parent_name_and_content(self):
        cmd = payloads.parse_send_reply(body(channelId=1, content="a", parentId=MSG_ID.upper(),
                                             parentName="forged", parentContent="forged"), "direct", MAX)
        assert cmd.parent_id == MSG_ID
        assert not hasattr(cmd, "parent_name")

    def test_modify_and_delete_need_an_id(self):
        assert bad(payloads.parse_modify, body(channelId=1, content="a"), "direct", MAX) == "id: required"
        assert bad(payloads.parse_delete, body(channelId=1, id=7), "direct") == "id: must be a message id"

    def test_typing_name_comes_from_content_then_name(self):
        assert payloads.parse_typing(body(channelId=1, content="kim"), "direct").name == "kim"
        assert payloads.parse_typing(body(channelId=1, name="lee"), "direct").name == "lee"
        assert payloads.parse_typing(body(channelId=1), "direct").name is None
        assert bad(payloads.parse_typing, body(channelId="Optional(5)", content="kim"), "direct") \
            == "channelId: must be a positive integer"


class TestPresencePayloads:
    @pytest.mark.parametrize("value, location, kind, ident", [
        ("home", "home", "home", None), ("c-12", "c-12", "channel", 12), ("r-17", "r-17", "direct", 17),
    ])
    def test_join_locations(self, value, location, kind, ident):
        assert payloads.parse_join(body(channel_id=value, user_id=999, type="logout")) \
            == payloads.JoinLocation(location, kind, ident)

    @pytest.mark.parametrize("value", ["com3,c-7", "c-", "x-1", "c-0", "c-007", 12, "HOME", "null"])
    def test_other_join_locations_are_refused(self, value):
        assert bad(payloads.parse_join, body(channel_id=value)).startswith("channel_id: must be")

    def test_signaling_payloads(self):
        assert payloads.parse_community_signaling(body(community_id="3")) == payloads.EnterCommunity(3)
        assert payloads.parse_voice_signaling(body(community_id="3", channel_id="c-12")) \
            == payloads.EnterVoice(3, 12)
        assert bad(payloads.parse_voice_signaling, body(community_id="3")) == "channel_id: required"
        assert bad(payloads.parse_community_signaling, body(community_id="x")) \
            == "community_id: must be a positive integer"


class TestUnstorableText:
    """Text JSON can spell but UTF-8 cannot store is refused naming its field (issue 12 item 4)."""

    @pytest.mark.parametrize("field", ["content", "name", "profileImage"])
    def test_a_lone_surrogate_is_refused_naming_its_field(self, field):
        raw = json.dumps({"channelId": 1, "content": "ok", field: "a\udc80b"}).encode()
        assert bad(payloads.parse_send_message, raw, "direct", MAX) == f"{field}: invalid Unicode"

    def test_a_lone_surrogate_in_an_edit_is_refused(self):
        raw = json.dumps({"channelId": 1, "id": "a" * 24, "content": "\ud800"}).encode()
        assert bad(payloads.parse_modify, raw, "direct", MAX) == "content: invalid Unicode"

    def test_a_paired_surrogate_is_a_character_and_is_kept(self):
        raw = json.dumps({"channelId": 1, "content": "\ud83d\ude00"}).encode()
        assert payloads.parse_send_message(raw, "direct", MAX).content == "\U0001F600"

    def test_nesting_deeper_than_the_parser_allows_is_refused_not_a_crash(self):
        raw = b"[" * 100_000 + b"]" * 100_000
        assert bad(payloads.parse_send_message, raw, "direct", MAX) == "body: malformed JSON"
