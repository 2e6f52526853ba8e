"""The presence request handler (app.tcp_presence.handler) on an in-memory store.

Every request type is sent as the original pseudo-JSON (protocol.md §7.2) and as JSON,
and the reply bytes are compared exactly (§7.3 for legacy senders, the one-line JSON
objects for the chat server). The same behaviour against real Redis over real TCP is
covered by tests/integration/test_presence_tcp.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.errors import BackendUnavailable
from app.service_auth import parse_networks
from app.settings import Settings
from app.tcp_presence.codec import LineTooLongEvent
from app.tcp_presence.handler import MAX_CONSECUTIVE_ERRORS, Caller, PresenceHandler
from app.tcp_presence.store import VoiceOut
from tests.support.presence import MemoryPresenceStore, RecordingNotifier

OK = "반환메세지\r\n".encode("utf-8")


# The deployment's networks in these tests: this host and the private network the servers share.
DEPLOYMENT = parse_networks("127.0.0.0/8, 10.0.0.0/8")
OUTSIDE = "203.0.113.9"


@pytest.fixture
def store() -> MemoryPresenceStore:
    return MemoryPresenceStore()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def handler(store: MemoryPresenceStore, notifier: RecordingNotifier) -> PresenceHandler:
    return PresenceHandler(store, notifier, open_networks=DEPLOYMENT)


def legacy(handler: PresenceHandler, **fields: str) -> bytes:
    """Send a request in the exact shape of the Java chat server's ``toString()``."""
    values = {"session_id": "null", "user_id": "null", "channel_id": "null", "community_id": "null", **fields}
    ids = values.pop("ids", "null")
    line = (f"{{type='{values.pop('type')}', session_id='{values['session_id']}', user_id='{values['user_id']}', "
            f"channel_id='{values['channel_id']}', community_id='{values['community_id']}', ids={ids}}}")
    return handler.handle_line(line.encode("utf-8"))


def send_json(handler: PresenceHandler, **fields: Any) -> dict[str, Any]:
    reply = handler.handle_line(json.dumps(fields).encode("utf-8"))
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
    decoded = json.loads(reply)
    assert isinstance(decoded, dict)
    return decoded


# -- login / logout -------------------------------------------------------------------------------


def test_legacy_login_and_logout_replies(handler: PresenceHandler) -> None:
    assert legacy(handler, type="login", session_id="3kf9a2xq", user_id="5") == OK
    assert legacy(handler, type="logout", session_id="3kf9a2xq") == b"5,home\r\n"
    # W-12: a second DISCONNECT for the same session is harmless.
    assert legacy(handler, type="logout", session_id="3kf9a2xq") == b"null,null\r\n"


def test_json_login_and_logout_replies(handler: PresenceHandler, store: MemoryPresenceStore) -> None:
    assert send_json(handler, type="login", session_id="s1", user_id=5, node_id="n1") == \
        {"ok": True, "first_session": True}
    assert store.sessions["s1"].node_id == "n1"
    assert send_json(handler, type="logout", session_id="s1", node_id="n1") == \
        {"ok": True, "user_id": 5, "location": "home", "last_session": True}
    assert send_json(handler, type="logout", session_id="s1", node_id="n1") == \
        {"ok": True, "user_id": None, "location": None, "last_session": False}


def test_two_sessions_of_one_user(handler: PresenceHandler, store: MemoryPresenceStore) -> None:
    """W-11: a second tab keeps the location; closing one tab keeps the user online."""
    assert send_json(handler, type="login", session_id="tab1", user_id=5)["first_session"] is True
    send_json(handler, type="state", user_id=5, session_id="tab1", channel_id="c-12")
    assert send_json(handler, type="login", session_id="tab2", user_id=5)["first_session"] is False
    assert store.friends_state([5]) == {5: "c-12"}
    assert send_json(handler, type="logout", session_id="tab1") == \
        {"ok": True, "user_id": 5, "location": "c-12", "last_session": False}
    assert store.online_users() == [5]
    assert send_json(handler, type="logout", session_id="tab2")["last_session"] is True
    assert store.online_users() == []


# -- state ------------------------------------------------------------------------------------------


def test_legacy_state_reply_is_last_comma_now(handler: PresenceHandler) -> None:
    legacy(handler, type="login", session_id="s1", user_id="5")
    assert legacy(handler, type="state", user_id="5", channel_id="c-12") == b"home,c-12\r\n"
    assert legacy(handler, type="state", user_id="5", channel_id="r-17") == b"c-12,r-17\r\n"
    # A user without a session has no last location.
    assert legacy(handler, type="state", user_id="6", channel_id="c-12") == b"null,c-12\r\n"


def test_json_state_reply(handler: PresenceHandler) -> None:
    send_json(handler, type="login", session_id="s1", user_id=5)
    assert send_json(handler, type="state", user_id=5, session_id="s1", channel_id="c-12") == \
        {"ok": True, "last": "home", "now": "c-12"}


def test_state_after_voice_reports_the_voice_location(handler: PresenceHandler) -> None:
    legacy(handler, type="login", session_id="s1", user_id="5")
    legacy(handler, type="enter", user_id="5", channel_id="c-7", community_id="3")
    assert legacy(handler, type="state", user_id="5", channel_id="c-12") == b"com3,c-7,c-12\r\n"


@pytest.mark.parametrize("location", ["com3,c-7", "c-", "x-1", "c-1 ", "HOME"])
def test_state_rejects_locations_outside_section_7_5(handler: PresenceHandler, location: str) -> None:
    assert legacy(handler, type="state", user_id="5", channel_id=location) == b"ERROR invalid field channel_id\r\n"


# -- direct / community -------------------------------------------------------------------------


def test_notify_targets_skip_members_in_the_room(handler: PresenceHandler) -> None:
    for sid, user in (("a", "2"), ("b", "3"), ("c", "9")):
        legacy(handler, type="login", session_id=sid, user_id=user)
    legacy(handler, type="state", user_id="9", channel_id="r-17")
    # W-16: the original chat server puts the room key in community_id.
    assert legacy(handler, type="direct", community_id="r-17", ids="[2, 9, 3]") == b"[2, 3]\r\n"
    assert legacy(handler, type="direct", channel_id="r-17", ids="[9]") == b"[]\r\n"
    assert send_json(handler, type="direct", channel_id="r-17", ids=[2, 9, 3]) == {"ok": True, "targets": [2, 3]}


def test_community_targets_and_offline_members(handler: PresenceHandler) -> None:
    legacy(handler, type="login", session_id="a", user_id="9")
    legacy(handler, type="state", user_id="9", channel_id="c-8")
    assert legacy(handler, type="community", community_id="c-8", ids="[9, 12, 30]") == b"[12, 30]\r\n"
    assert send_json(handler, type="community", channel_id="c-8", ids=["9", "12"]) == {"ok": True, "targets": [12]}


def test_notify_targets_need_a_room_key_and_ids(handler: PresenceHandler) -> None:
    assert legacy(handler, type="direct", ids="[1]") == b"ERROR missing field community_id\r\n"
    assert legacy(handler, type="direct", community_id="r-17") == b"ERROR missing field ids\r\n"
    assert legacy(handler, type="direct", community_id="home", ids="[1]") == b"ERROR invalid field community_id\r\n"
    assert send_json(handler, type="direct", channel_id="r-1", ids=[1, "x"]) == \
        {"ok": False, "error": "invalid field ids"}


# -- voice ------------------------------------------------------------------------------------------


def test_before_enter_and_enter_reply_the_occupancy_map(handler: PresenceHandler,
                                                         store: MemoryPresenceStore) -> None:
    for sid, user in (("a", "5"), ("b", "9")):
        legacy(handler, type="login", session_id=sid, user_id=user)
    assert legacy(handler, type="before-enter", user_id="5", community_id="3") == b"{}\r\n"
    assert legacy(handler, type="enter", user_id="9", channel_id="c-12", community_id="3") == b'{"12":["9"]}\r\n'
    assert legacy(handler, type="enter", user_id="5", channel_id="c-14", community_id="3") == \
        b'{"12":["9"],"14":["5"]}\r\n'
    assert legacy(handler, type="enter", user_id="5", channel_id="c-12", community_id="3") == \
        b'{"12":["5","9"],"14":[]}\r\n'
    assert send_json(handler, type="before-enter", user_id=9, community_id=3) == \
        {"ok": True, "state": '{"12":["5","9"],"14":[]}'}
    assert store.friends_state([5]) == {5: "com3,c-12"}


def test_before_enter_moves_nobody(handler: PresenceHandler, store: MemoryPresenceStore) -> None:
    """W-21: before-enter only reads."""
    legacy(handler, type="login", session_id="a", user_id="5")
    legacy(handler, type="enter", user_id="5", channel_id="c-12", community_id="3")
    legacy(handler, type="before-enter", user_id="5", community_id="4")
    assert store.voice_occupancy(3) == {12: [5]}
    assert store.friends_state([5]) == {5: "com3,c-12"}


def test_enter_elsewhere_reports_the_channel_left(handler: PresenceHandler, notifier: RecordingNotifier) -> None:
    for sid, user in (("a", "5"), ("b", "9")):
        legacy(handler, type="login", session_id=sid, user_id=user)
    legacy(handler, type="enter", user_id="5", channel_id="c-12", community_id="3")
    legacy(handler, type="enter", user_id="9", channel_id="c-12", community_id="3")
    assert send_json(handler, type="enter", user_id=5, community_id=4, channel_id="c-1") == \
        {"ok": True, "state": '{"1":["5"]}'}
    assert notifier.voice_outs == [VoiceOut(3, 12, (9,))]


def test_enter_needs_a_voice_channel(handler: PresenceHandler) -> None:
    assert legacy(handler, type="enter", user_id="5", channel_id="r-12", community_id="3") == \
        b"ERROR invalid field channel_id\r\n"
    assert legacy(handler, type="enter", user_id="5", channel_id="c-12") == b"ERROR missing field community_id\r\n"


def test_signaling_community_voice(handler: PresenceHandler, notifier: RecordingNotifier,
                                   store: MemoryPresenceStore) -> None:
    for sid, user in (("a", "5"), ("b", "9")):
        legacy(handler, type="login", session_id=sid, user_id=user)
    legacy(handler, type="state", user_id="5", channel_id="c-8")
    legacy(handler, type="enter", user_id="5", channel_id="c-12", community_id="3")
    legacy(handler, type="enter", user_id="9", channel_id="c-12", community_id="3")
    line = b"{type='signaling', user_id='5', community_id='3', channel_id='c-12'}"
    assert handler.handle_line(line) == OK
    assert notifier.voice_outs == [VoiceOut(3, 12, (9,))]
    assert notifier.voice_outs[0].event() == {"type": "out", "communityId": "3", "channelId": "c-12", "ids": ["9"]}
    # The user's location goes back to the text channel they were in before the call.
    assert store.friends_state([5]) == {5: "c-8"}


def test_signaling_dm_call_works(handler: PresenceHandler, notifier: RecordingNotifier,
                                 store: MemoryPresenceStore) -> None:
    """W-20: community 'null' (or 0) and channel r-R is a DM call."""
    store.calls[17] = {5, 9}
    assert handler.handle_line(b"{type='signaling', user_id='5', community_id='null', channel_id='r-17'}") == OK
    assert send_json(handler, type="signaling", user_id=9, community_id=0, channel_id="r-17") == \
        {"ok": True, "out": {"type": "out", "channelId": "17", "ids": []}}
    assert notifier.voice_outs == [VoiceOut(None, 17, (9,)), VoiceOut(None, 17, ())]
    assert notifier.voice_outs[0].event() == {"type": "out", "channelId": "17", "ids": ["9"]}


def test_signaling_json_reply_carries_the_out_event(handler: PresenceHandler) -> None:
    legacy(handler, type="login", session_id="a", user_id="5")
    legacy(handler, type="enter", user_id="5", channel_id="c-12", community_id="3")
    assert send_json(handler, type="signaling", user_id=5, community_id=3, channel_id="c-12") == \
        {"ok": True, "out": {"type": "out", "communityId": "3", "channelId": "c-12", "ids": []}}


def test_signaling_rejects_mismatched_channel(handler: PresenceHandler) -> None:
    assert handler.handle_line(b"{type='signaling', user_id='5', community_id='3', channel_id='r-17'}") == \
        b"ERROR invalid field channel_id\r\n"
    assert handler.handle_line(b"{type='signaling', user_id='5', community_id='null', channel_id='c-17'}") == \
        b"ERROR invalid field channel_id\r\n"


def test_last_logout_leaves_the_voice_channel(handler: PresenceHandler, notifier: RecordingNotifier,
                                              store: MemoryPresenceStore) -> None:
    legacy(handler, type="login", session_id="a", user_id="5")
    legacy(handler, type="enter", user_id="5", channel_id="c-12", community_id="3")
    assert legacy(handler, type="logout", session_id="a") == b"5,com3,c-12\r\n"
    assert notifier.voice_outs == [VoiceOut(3, 12, ())]
    assert store.voice_occupancy(3) == {12: []}


# -- lease / sync -----------------------------------------------------------------------------------


def test_lease_and_sync(handler: PresenceHandler, store: MemoryPresenceStore) -> None:
    assert send_json(handler, type="lease", node_id="chat-1:8080") == {"ok": True}
    assert "chat-1:8080" in store.nodes
    send_json(handler, type="login", session_id="old", user_id=7, node_id="n1")
    send_json(handler, type="login", session_id="kept", user_id=8, node_id="n1")
    assert send_json(handler, type="sync", node_id="n1", sessions=[["kept", "8"], ["new", 9]]) == \
        {"ok": True, "added": 1, "removed": 1}
    assert store.online_users() == [8, 9]


def test_chunked_sync_applies_on_the_final_part(handler: PresenceHandler, store: MemoryPresenceStore) -> None:
    assert send_json(handler, type="sync", node_id="n1", sessions=[["a", 1]], sync_id="x", final=False) == \
        {"ok": True, "added": 0, "removed": 0}
    assert store.online_users() == []
    assert send_json(handler, type="sync", node_id="n1", sessions=[["b", 2]], sync_id="x", final=True) == \
        {"ok": True, "added": 2, "removed": 0}
    assert store.online_users() == [1, 2]


def test_sync_validates_its_sessions(handler: PresenceHandler) -> None:
    assert send_json(handler, type="sync", node_id="n1", sessions=[["bad id!", 1]]) == \
        {"ok": False, "error": "invalid field sessions"}
    assert send_json(handler, type="sync", node_id="n1") == {"ok": False, "error": "missing field sessions"}
    assert send_json(handler, type="lease", node_id="bad node") == {"ok": False, "error": "invalid field node_id"}


# -- errors --------------------------------------------------------------------------------------------


def test_unknown_type_gets_the_default_reply_from_legacy_and_an_error_from_json(handler: PresenceHandler) -> None:
    assert handler.handle_line(b"{type='bogus', user_id='5'}") == OK
    assert send_json(handler, type="bogus") == {"ok": False, "error": "unknown type"}


@pytest.mark.parametrize("line,reply", [
    (b"garbage", b"ERROR malformed request\r\n"),
    (b"", b"ERROR malformed request\r\n"),
    (b"{user_id='5'}", b"ERROR missing field type\r\n"),
    (b"{type='login', user_id='5'}", b"ERROR missing field session_id\r\n"),
    (b"{type='login', session_id='s1'}", b"ERROR missing field user_id\r\n"),
    (b"{type='login', session_id='s1', user_id='5 OR 1'}", b"ERROR invalid field user_id\r\n"),
    (b"{type='login', session_id='s 1', user_id='5'}", b"ERROR invalid field session_id\r\n"),
    (b"{type='logout', session_id='null'}", b"ERROR missing field session_id\r\n"),
    (b'{"type":"login","session_id":"s1"}', b'{"ok":false,"error":"missing field user_id"}\r\n'),
    (b'{"type":"login",', b'{"ok":false,"error":"malformed request"}\r\n'),
])
def test_bad_requests_get_an_error_line(handler: PresenceHandler, line: bytes, reply: bytes) -> None:
    assert handler.handle_line(line) == reply


def test_line_too_long_reply_in_kind(handler: PresenceHandler) -> None:
    caller = handler.connect("127.0.0.1")
    assert handler.handle_event(LineTooLongEvent(b"{type='direct'"), caller) == b"ERROR line too long\r\n"
    assert handler.handle_event(LineTooLongEvent(b'{"type":"sync"'), caller) == \
        b'{"ok":false,"error":"line too long"}\r\n'


class _BrokenStore(MemoryPresenceStore):
    def login(self, session_id: str, user_id: int, node_id: str | None, owner: str = "") -> bool:
        raise KeyError("secret internals")

    def logout(self, session_id: str, owners: Any = None) -> Any:
        raise BackendUnavailable("redis down")


def test_failures_never_leak_exception_text(notifier: RecordingNotifier) -> None:
    handler = PresenceHandler(_BrokenStore(), notifier, open_networks=DEPLOYMENT)
    assert handler.handle_line(b"{type='login', session_id='s1', user_id='5'}") == b"ERROR internal error\r\n"
    assert handler.handle_line(b'{"type":"logout","session_id":"s1"}') == \
        b'{"ok":false,"error":"backend unavailable"}\r\n'


# -- Who may do what (issue 14 item 2) --------------------------------------------------------------

TOKEN = "presence-s3cret"


@pytest.fixture
def guarded(store: MemoryPresenceStore, notifier: RecordingNotifier) -> PresenceHandler:
    """A handler of a deployment with a presence token."""
    return PresenceHandler(store, notifier, token=TOKEN, open_networks=DEPLOYMENT)


def ask(handler: PresenceHandler, caller: Caller, **fields: Any) -> dict[str, Any]:
    decoded = json.loads(handler.handle_line(json.dumps(fields).encode("utf-8"), caller))
    assert isinstance(decoded, dict)
    return decoded


def node_connection(handler: PresenceHandler) -> Caller:
    caller = handler.connect("10.0.0.5")
    assert ask(handler, caller, type="auth", token=TOKEN) == {"ok": True}
    return caller


@pytest.mark.parametrize("request_fields", [
    {"type": "lease", "node_id": "n1"},
    {"type": "sync", "node_id": "n1", "sessions": []},
    {"type": "login", "session_id": "s9", "user_id": 9, "node_id": "n1"},
    {"type": "logout", "session_id": "s1", "node_id": "n1"},
])
def test_node_requests_need_the_presence_token(guarded: PresenceHandler, store: MemoryPresenceStore,
                                               request_fields: dict[str, Any]) -> None:
    """Issue 14: any connection could wipe a node's sessions with an empty sync."""
    ask(guarded, node_connection(guarded), type="login", session_id="s1", user_id=5, node_id="n1")
    stranger = guarded.connect("10.0.0.66")
    assert ask(guarded, stranger, **request_fields) == {"ok": False, "error": "auth required"}
    assert ask(guarded, stranger, type="auth", token="guess") == {"ok": False, "error": "invalid token"}
    assert ask(guarded, stranger, **request_fields) == {"ok": False, "error": "auth required"}
    assert set(store.sessions) == {"s1"} and store.leases == {"n1": 15.0}


def test_a_node_logs_out_only_the_sessions_it_logged_in(guarded: PresenceHandler, store: MemoryPresenceStore) -> None:
    node_a, node_b = node_connection(guarded), node_connection(guarded)
    ask(guarded, node_a, type="login", session_id="s1", user_id=5, node_id="a")
    assert ask(guarded, node_b, type="logout", session_id="s1", node_id="b") == {"ok": False, "error": "not allowed"}
    assert ask(guarded, node_b, type="logout", session_id="s1") == {"ok": False, "error": "not allowed"}
    assert "s1" in store.sessions
    # Any connection of node a (the chat node's pool), naming it, may.
    assert ask(guarded, node_b, type="logout", session_id="s1", node_id="a")["user_id"] == 5


def test_a_session_without_a_node_belongs_to_its_connection(guarded: PresenceHandler,
                                                             store: MemoryPresenceStore) -> None:
    owner, forger = guarded.connect("10.0.0.5"), guarded.connect("10.0.0.5")
    assert guarded.handle_line(b"{type='login', session_id='victim', user_id='5'}", owner) == OK
    assert guarded.handle_line(b"{type='logout', session_id='victim'}", forger) == b"ERROR not allowed\r\n"
    assert guarded.handle_line(b"{type='login', session_id='victim', user_id='6'}", forger) == \
        b"ERROR not allowed\r\n"
    assert store.sessions["victim"].user_id == 5
    assert guarded.handle_line(b"{type='logout', session_id='victim'}", owner) == b"5,home\r\n"


def test_without_a_token_legacy_sessions_belong_to_the_host(handler: PresenceHandler) -> None:
    """The original chat server logs in and out on different connections of its pool."""
    pooled, other_host = handler.connect("10.0.0.5"), handler.connect("10.0.0.6")
    login = b"{type='login', session_id='s1', user_id='5'}"
    assert handler.handle_line(login, handler.connect("10.0.0.5")) == OK
    assert handler.handle_line(b"{type='logout', session_id='s1'}", other_host) == b"ERROR not allowed\r\n"
    assert handler.handle_line(b"{type='logout', session_id='s1'}", pooled) == b"5,home\r\n"
    # And lease/sync need no credential there.
    assert ask(handler, other_host, type="lease", node_id="n1") == {"ok": True}


def test_a_flood_of_errors_gets_a_bounded_answer_and_closes(handler: PresenceHandler) -> None:
    caller = handler.connect("10.0.0.5")
    replies = []
    for _ in range(MAX_CONSECUTIVE_ERRORS * 10):
        replies.append(handler.handle_line(b"", caller))
        if caller.closed:
            break
    assert caller.closed and len(replies) == MAX_CONSECUTIVE_ERRORS
    assert replies[-1] == b"ERROR malformed request\r\nERROR too many errors\r\n"


def test_a_good_request_resets_the_error_run(handler: PresenceHandler) -> None:
    caller = handler.connect("10.0.0.5")
    for _ in range(3):
        for _ in range(MAX_CONSECUTIVE_ERRORS - 1):
            handler.handle_line(b"garbage", caller)
        assert handler.handle_line(b"{type='login', session_id='s1', user_id='5'}", caller) == OK
    assert not caller.closed and caller.errors == 0


# -- Who may connect at all: the allowed networks (PRESENCE_ALLOWED_NETWORKS) ------------------------


def test_with_a_token_an_outside_connection_is_served_only_once_it_shows_it(guarded: PresenceHandler,
                                                                           store: MemoryPresenceStore) -> None:
    outsider = guarded.connect(OUTSIDE)
    for fields in ({"type": "state", "user_id": 5, "channel_id": "c-1"}, {"type": "direct", "channel_id": 7,
                                                                            "ids": [5]},
                   {"type": "login", "session_id": "s1", "user_id": 5}):
        assert ask(guarded, outsider, **fields) == {"ok": False, "error": "auth required"}
    assert guarded.handle_line(b"{type='login', session_id='s1', user_id='5'}", outsider) == \
        b"ERROR auth required\r\n"
    assert store.sessions == {}
    assert ask(guarded, outsider, type="auth", token=TOKEN) == {"ok": True}
    assert ask(guarded, outsider, type="login", session_id="s1", user_id=5) == {"ok": True, "first_session": True}


def test_with_a_token_a_listed_connection_keeps_the_original_lines_without_it(guarded: PresenceHandler) -> None:
    signaling_server = guarded.connect("10.0.0.7")
    assert guarded.handle_line(b"{type='login', session_id='s1', user_id='5'}", signaling_server) == OK


def test_without_a_token_an_outside_connection_is_refused_everything(handler: PresenceHandler,
                                                                     store: MemoryPresenceStore) -> None:
    outsider = handler.connect(OUTSIDE)
    assert handler.handle_line(b"{type='login', session_id='s1', user_id='5'}", outsider) == b"ERROR not allowed\r\n"
    assert ask(handler, outsider, type="auth", token="anything") == {"ok": False, "error": "not allowed"}
    assert ask(handler, outsider, type="lease", node_id="n1") == {"ok": False, "error": "not allowed"}
    assert store.sessions == {} and store.leases == {}


def test_by_default_only_this_host_is_listed(store: MemoryPresenceStore, notifier: RecordingNotifier) -> None:
    default = PresenceHandler(store, notifier, open_networks=parse_networks(Settings().presence_allowed_networks))
    assert default.connect("127.0.0.1").listed and default.connect("::1").listed
    assert not default.connect("10.0.0.5").listed
