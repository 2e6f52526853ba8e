"""What each presence request does: request -> store calls -> reply (protocol.md §7.3).

Owns :class:`PresenceHandler`: dispatch by ``type``, field validation (through
:mod:`app.tcp_presence.fields`), replies in kind, error replies that never carry
exception text. It is written against the :class:`~app.tcp_presence.store.PresenceStore`
and :class:`~app.tcp_presence.store.ChatNotifier` interfaces and receives both. No
sockets, no redis, no gevent: the real store is ``app/backends/redis_presence.py``, the
unit tests use an in-memory fake.

Request types (fields in brackets are optional):

==============  =========================================  ===============================
type            fields                                     legacy reply / JSON fields
==============  =========================================  ===============================
login           session_id, user_id, [node_id]             반환메세지 / first_session
logout          session_id                                 ``U,L`` / user_id, location,
                                                           last_session
state           user_id, channel_id, [session_id]          ``L,P`` / last, now
direct,         channel_id (room key) or, when absent,     ``[2, 3]`` / targets
community       community_id (W-16); ids
before-enter    community_id, [user_id]                    occupancy JSON / state
enter           user_id, community_id, channel_id ``c-X``  occupancy JSON / state
signaling       user_id, channel_id, [community_id]        반환메세지 / out
lease           node_id                                    반환메세지 / (nothing)
sync            node_id, sessions, [sync_id], [final]      반환메세지 / added, removed
==============  =========================================  ===============================

An unknown ``type`` gets the original's default reply ``반환메세지`` from a legacy sender
(byte-compatible with §7.3) and ``{"ok":false,"error":"unknown type"}`` from a JSON one.
"""

from __future__ import annotations

import logging
from typing import Callable

from app.errors import BackendError

from . import fields
from .codec import (
    DEFAULT_REPLY,
    NODE_ID_PATTERN,
    SESSION_ID_PATTERN,
    LineTooLongEvent,
    Reply,
    Request,
    RequestError,
    Syntax,
    format_error,
    format_reply,
    legacy_id_list,
    legacy_pair,
    occupancy_json,
    parse_request,
)
from .store import ChatNotifier, PresenceStore

__all__ = ["PresenceHandler"]

log = logging.getLogger(__name__)


class PresenceHandler:
    """Turns request lines into reply lines. Safe to share between connections."""

    def __init__(self, store: PresenceStore, notifier: ChatNotifier) -> None:
        self.store = store
        self.notifier = notifier
        self._handlers: dict[str, Callable[[Request], Reply]] = {
            "login": self._login,
            "logout": self._logout,
            "state": self._state,
            "direct": self._notify_targets,
            "community": self._notify_targets,
            "before-enter": self._before_enter,
            "enter": self._enter,
            "signaling": self._signaling,
            "lease": self._lease,
            "sync": self._sync,
        }

    def handle_event(self, event: bytes | LineTooLongEvent) -> bytes:
        """One framed event (a line, or an oversize-line marker) -> exactly one reply line."""
        if isinstance(event, LineTooLongEvent):
            return format_error("line too long", event.syntax)
        return self.handle_line(event)

    def handle_line(self, line: bytes) -> bytes:
        syntax: Syntax = "legacy"
        try:
            request = parse_request(line)
            syntax = request.syntax
            return format_reply(self.handle(request), syntax)
        except RequestError as error:
            return format_error(error.reason, error.syntax)
        except BackendError:
            log.warning("presence store unavailable", exc_info=True)
            return format_error("backend unavailable", syntax)
        except Exception:
            # Never put exception text on the wire: it can be security-sensitive.
            log.exception("presence request failed")
            return format_error("internal error", syntax)

    def handle(self, request: Request) -> Reply:
        """Dispatch one parsed request. Raises RequestError or BackendError."""
        kind = request.type
        if kind is None:
            raise request.error("missing field type")
        handler = self._handlers.get(kind)
        if handler is None:
            if request.syntax == "legacy":
                return Reply(DEFAULT_REPLY)
            raise request.error("unknown type")
        return handler(request)

    # Each handler validates its fields before touching the store.

    def _login(self, request: Request) -> Reply:
        session_id = _session_id(request)
        user_id = fields.required_id(request, "user_id")
        node_id = request.matching("node_id", NODE_ID_PATTERN, required=False)
        first = self.store.login(session_id, user_id, node_id)
        return Reply(DEFAULT_REPLY, {"first_session": first})

    def _logout(self, request: Request) -> Reply:
        end = self.store.logout(_session_id(request))
        if end.voice_left is not None:
            self.notifier.voice_out(end.voice_left)
        return Reply(legacy_pair(end.user_id, end.location),
                     {"user_id": end.user_id, "location": end.location, "last_session": end.last_session})

    def _state(self, request: Request) -> Reply:
        user_id = fields.required_id(request, "user_id")
        session_id = request.matching("session_id", SESSION_ID_PATTERN, required=False)
        location = fields.text_location(request, "channel_id")
        change = self.store.move(user_id, session_id, location)
        return Reply(legacy_pair(change.last, change.now), {"last": change.last, "now": change.now})

    def _notify_targets(self, request: Request) -> Reply:
        # W-16: the original chat server puts the room key in community_id.
        field_name = "channel_id" if request.has("channel_id") else "community_id"
        room_key = fields.room_key(request, field_name)
        targets = self.store.absent_members(room_key, fields.id_list(request, "ids"))
        return Reply(legacy_id_list(targets), {"targets": targets})

    def _before_enter(self, request: Request) -> Reply:
        community_id = fields.required_id(request, "community_id")
        fields.optional_id(request, "user_id")  # validated, but nobody is moved (W-21)
        state = occupancy_json(self.store.voice_occupancy(community_id))
        return Reply(state, {"state": state})

    def _enter(self, request: Request) -> Reply:
        user_id = fields.required_id(request, "user_id")
        community_id = fields.required_id(request, "community_id")
        voice_channel_id = fields.channel_number(request, "channel")
        entry = self.store.enter_voice(user_id, community_id, voice_channel_id)
        if entry.left is not None:
            self.notifier.voice_out(entry.left)
        state = occupancy_json(entry.occupancy)
        return Reply(state, {"state": state})

    def _signaling(self, request: Request) -> Reply:
        user_id = fields.required_id(request, "user_id")
        community_id = fields.call_community_id(request)
        if community_id is not None:
            out = self.store.leave_voice(user_id, community_id, fields.channel_number(request, "channel"))
        else:
            out = self.store.leave_call(user_id, fields.channel_number(request, "direct"))
        self.notifier.voice_out(out)
        return Reply(DEFAULT_REPLY, {"out": out.event()})

    def _lease(self, request: Request) -> Reply:
        self.store.renew_lease(_node_id(request))
        return Reply(DEFAULT_REPLY)

    def _sync(self, request: Request) -> Reply:
        node_id = _node_id(request)
        sessions = fields.session_pairs(request, "sessions")
        sync_id = request.matching("sync_id", SESSION_ID_PATTERN, required=False)
        outcome = self.store.sync_node(node_id, sessions, sync_id=sync_id, final=request.flag("final", True))
        for out in outcome.voice_left:
            self.notifier.voice_out(out)
        return Reply(DEFAULT_REPLY, {"added": outcome.added, "removed": outcome.removed})


def _session_id(request: Request) -> str:
    value = request.matching("session_id", SESSION_ID_PATTERN)
    assert value is not None
    return value


def _node_id(request: Request) -> str:
    value = request.matching("node_id", NODE_ID_PATTERN)
    assert value is not None
    return value
