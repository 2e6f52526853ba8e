"""The destination grammar (app/destinations.py): every form, both directions."""

import pytest
from hypothesis import given, strategies as st

from app import destinations as d

IDS_OK = [("1", 1), ("9", 9), ("10", 10), (str(2**63 - 1), 2**63 - 1), ("1234567890123456789", 1234567890123456789)]
IDS_BAD = ["", "0", "00", "01", "007", "-1", "+1", " 1", "1 ", "1.0", "1e3", "abc", "١", str(2**63),
           "9999999999999999999", "12345678901234567890", "0x1", "1\n"]


@pytest.mark.parametrize("text,value", IDS_OK)
def test_canonical_ids_parse(text, value):
    assert d.parse_id(text) == value


@pytest.mark.parametrize("text", IDS_BAD)
def test_non_canonical_ids_are_refused(text):
    assert d.parse_id(text) is None


@pytest.mark.parametrize("kind", ["direct", "group", "community"])
def test_topics_round_trip(kind):
    assert d.topic(kind, 42) == f"/topic/{kind}/42"
    assert d.parse_topic(f"/topic/{kind}/42") == d.Topic(kind, 42)
    assert str(d.Topic(kind, 42)) == f"/topic/{kind}/42"


@pytest.mark.parametrize("destination", [
    "/topic/direct/0", "/topic/direct/01", "/topic/direct/", "/topic/direct", "/topic/direct/1/2",
    "/topic/channel/1", "/topic/Direct/1", "/topic/direct/*", "/topic/direct/1 ", "topic/direct/1",
    f"/topic/direct/{2**63}", "/queue/direct/1", "/topic/group/-1", "/topic//direct/1", "",
])
def test_other_destinations_are_not_topics(destination):
    assert d.parse_topic(destination) is None


@pytest.mark.parametrize("destination,wild", [("/topic/*", True), ("/topic/direct/#", True),
                                              ("/topic/>", True), ("/topic/direct/1", False)])
def test_wildcards_are_recognised(destination, wild):
    assert d.has_wildcard(destination) is wild


@pytest.mark.parametrize("destination,server", [("/topic", True), ("/topic/x", True), ("/topics", False),
                                                ("/kafka/send-direct-message", False), ("", False)])
def test_server_topics(destination, server):
    assert d.is_server_topic(destination) is server


@pytest.mark.parametrize("text,key", [("r-7", d.RoomKey("direct", 7)), ("c-12", d.RoomKey("channel", 12))])
def test_room_keys_round_trip(text, key):
    assert d.parse_room_key(text) == key
    assert str(key) == text == d.room_key(key.kind, key.ident)


@pytest.mark.parametrize("text", ["r-0", "c-01", "x-1", "r-", "r7", "R-7", "home", "com1,c-2", f"c-{2**63}", "r-7 "])
def test_bad_room_keys(text):
    assert d.parse_room_key(text) is None


@pytest.mark.parametrize("text,ok", [("home", True), ("r-1", True), ("c-1", True), ("Home", False),
                                     ("com1,c-2", False), ("r-0", False), ("", False)])
def test_text_locations(text, ok):
    assert d.is_text_location(text) is ok


def test_voice_locations_round_trip():
    assert d.voice_location(3, 12) == "com3,c-12"
    assert d.parse_voice_location("com3,c-12") == d.VoiceLocation(3, 12)
    assert str(d.VoiceLocation(3, 12)) == "com3,c-12"


@pytest.mark.parametrize("text", ["com3,c-0", "com0,c-1", "com3,r-12", "com3, c-12", "c-12", "com3,c-12,", ""])
def test_bad_voice_locations(text):
    assert d.parse_voice_location(text) is None


@pytest.mark.parametrize("text,value", [("c-12", 12), ("12", 12), ("r-12", None), ("c-0", None), ("x", None)])
def test_voice_channels_as_signaling_sends_them(text, value):
    assert d.parse_voice_channel(text) == value


@pytest.mark.parametrize("text,value", [("direct/7", ("direct", 7)), ("community/3", ("community", 3)),
                                        ("group/3", None), ("direct/07", None), ("direct/", None)])
def test_membership_entries(text, value):
    assert d.parse_membership_entry(text) == value
    if value:
        assert d.membership_entry(*value) == text


ids = st.integers(min_value=1, max_value=d.MAX_ID)


@given(ids)
def test_every_id_round_trips(value):
    assert d.parse_id(str(value)) == value


@given(st.text(max_size=30))
def test_parse_id_accepts_only_canonical_forms(text):
    value = d.parse_id(text)
    assert value is None or (str(value) == text and 0 < value <= d.MAX_ID)


@given(st.sampled_from(["direct", "group", "community"]), ids)
def test_every_topic_round_trips(kind, value):
    assert d.parse_topic(d.topic(kind, value)) == d.Topic(kind, value)


@given(st.sampled_from(["direct", "channel"]), ids)
def test_every_room_key_round_trips(kind, value):
    assert d.parse_room_key(d.room_key(kind, value)) == d.RoomKey(kind, value)


@given(ids, ids)
def test_every_voice_location_round_trips(community, channel):
    assert d.parse_voice_location(d.voice_location(community, channel)) == d.VoiceLocation(community, channel)


@given(st.text(max_size=40))
def test_parsers_never_raise(text):
    for parse in (d.parse_id, d.parse_topic, d.parse_room_key, d.parse_voice_location,
                  d.parse_voice_channel, d.parse_membership_entry, d.is_text_location):
        parse(text)
