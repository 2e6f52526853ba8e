"""The typed presence request fields (app.tcp_presence.fields): ids, lists of ids, sync
pairs, locations and channels, all read against app/destinations.py.

Ids are canonical positive int64 (no leading zero, no ``0``, at most 2**63-1), as text or
a JSON number; the only ``0`` that means something is signaling's "no community".
"""

from __future__ import annotations

from typing import Any

import pytest

from app.destinations import MAX_ID
from app.tcp_presence import fields
from app.tcp_presence.codec import Request, RequestError, parse_request


def json_request(**values: Any) -> Request:
    return Request("json", values)


@pytest.mark.parametrize("value,expected", [("5", 5), (5, 5), (str(MAX_ID), MAX_ID)])
def test_ids_as_text_or_numbers(value: Any, expected: int) -> None:
    assert fields.required_id(json_request(user_id=value), "user_id") == expected


@pytest.mark.parametrize("value", ["5x", "0", 0, "012", "-5", -5, str(MAX_ID + 1), "", " 5", True, 5.0, [5]])
def test_non_canonical_ids_are_invalid(value: Any) -> None:
    with pytest.raises(RequestError, match="invalid field user_id"):
        fields.required_id(json_request(user_id=value), "user_id")


def test_missing_and_optional_ids() -> None:
    with pytest.raises(RequestError, match="missing field user_id"):
        fields.required_id(json_request(), "user_id")
    assert fields.optional_id(json_request(), "user_id") is None
    assert fields.optional_id(json_request(user_id="7"), "user_id") == 7


def test_lenient_legacy_ids_parse() -> None:
    request = parse_request(b"{type=\"login\"; user_id=5}")
    assert fields.required_id(request, "user_id") == 5


@pytest.mark.parametrize("value,expected", [(None, None), ("0", None), (0, None), ("3", 3), (3, 3)])
def test_call_community_is_none_for_a_dm_call(value: Any, expected: int | None) -> None:
    request = json_request() if value is None else json_request(community_id=value)
    assert fields.call_community_id(request) == expected


def test_call_community_must_otherwise_be_an_id() -> None:
    with pytest.raises(RequestError, match="invalid field community_id"):
        fields.call_community_id(json_request(community_id="03"))


def test_id_lists() -> None:
    assert fields.id_list(json_request(ids=["9", 12]), "ids") == [9, 12]
    assert fields.id_list(json_request(ids=[]), "ids") == []
    with pytest.raises(RequestError, match="missing field ids"):
        fields.id_list(json_request(), "ids")
    for bad in (["9", "x"], [True], [0], ["07"], "9", [[9]]):
        with pytest.raises(RequestError, match="invalid field ids"):
            fields.id_list(json_request(ids=bad), "ids")


def test_session_pairs() -> None:
    request = parse_request(b"{type='sync', node_id='n1', sessions=[['a', '5'], [b, 6]]}")
    assert fields.session_pairs(request, "sessions") == [("a", 5), ("b", 6)]
    with pytest.raises(RequestError, match="missing field sessions"):
        fields.session_pairs(json_request(), "sessions")
    for bad in ([["bad id!", 1]], [["a", 0]], [["a"]], [[1, 1]], "a"):
        with pytest.raises(RequestError, match="invalid field sessions"):
            fields.session_pairs(json_request(sessions=bad), "sessions")


@pytest.mark.parametrize("location", ["home", "c-12", "r-17"])
def test_text_locations(location: str) -> None:
    assert fields.text_location(json_request(channel_id=location), "channel_id") == location


@pytest.mark.parametrize("location", ["com3,c-7", "c-", "x-1", "c-1 ", "HOME", "c-0", "c-012"])
def test_other_locations_are_invalid(location: str) -> None:
    with pytest.raises(RequestError, match="invalid field channel_id"):
        fields.text_location(json_request(channel_id=location), "channel_id")


def test_room_keys() -> None:
    assert fields.room_key(json_request(community_id="r-17"), "community_id") == "r-17"
    for bad in ("home", "r-0", "17", "com3,c-7"):
        with pytest.raises(RequestError, match="invalid field community_id"):
            fields.room_key(json_request(community_id=bad), "community_id")


def test_channel_numbers_need_the_right_kind() -> None:
    assert fields.channel_number(json_request(channel_id="c-12"), "channel") == 12
    assert fields.channel_number(json_request(channel_id="r-17"), "direct") == 17
    with pytest.raises(RequestError, match="missing field channel_id"):
        fields.channel_number(json_request(), "channel")
    for request, kind in ((json_request(channel_id="r-12"), "channel"), (json_request(channel_id="c-17"), "direct"),
                          (json_request(channel_id="12"), "channel"), (json_request(channel_id="c-012"), "channel")):
        with pytest.raises(RequestError, match="invalid field channel_id"):
            fields.channel_number(request, kind)
