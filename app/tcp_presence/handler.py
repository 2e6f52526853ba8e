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
auth            token                                      반환메세지 / (nothing)
login           session_id, user_id, [node_id]             반환메세지 / first_session
logout          session_id, [node_id]                      ``U,L`` / user_id, location,
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

Who may do what (issue 14). Each connection is a :class:`Caller`:

- With a presence token (``PRESENCE_TOKEN``), a connection is *trusted* (may act for chat
  nodes) once it sent ``auth`` with that token. Only a trusted connection may ``lease``,
  ``sync``, log a session in for a node (``node_id``) or log a node's session out (naming
  that ``node_id``). A session logged in without a node belongs to its connection: no other
  connection may log it out or log it in again.
- Without a presence token every connection is trusted (the original servers send no
  credential), and a session logged in without a node belongs to the *host* that logged it
  in, because the original chat server logs in and out on different pooled connections.
- Either way, a connection from outside the allowed networks (``PRESENCE_ALLOWED_NETWORKS``,
  loopback by default) is served nothing until it sent ``auth`` with the token (``auth
  required``), and nothing at all when there is no token (``not allowed``): the original
  servers' lines are served only where the deployment says they come from.
- Refusals are error replies (``auth required``, ``invalid token``, ``not allowed``) and
  change nothing. After ``MAX_CONSECUTIVE_ERRORS`` error replies in a row, the last one is
  followed by ``too many errors`` and the caller is marked closed: the server hangs up
  rather than answering a flood of garbage line by line.
- Every request line is counted in the metrics (``presence_request``) by type and outcome:
  ok, refused (a bad or forbidden request) or failed (the store, or a bug).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from typing import Callable, Final, Sequence

import app.metrics as metrics
from app.errors import BackendError
from app.logs import RateLimitedLog
from app.service_auth import Network, address_in

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
from .store import ChatNotifier, NotOwner, PresenceStore, connection_owner, host_owner, node_owner

__all__ = ["PresenceHandler", "Caller", "MAX_CONSECUTIVE_ERRORS"]

log = logging.getLogger(__name__)

# Error replies in a row after which a connection is closed (a client that sends only
# garbage gets this many answers, not one per line of its flood).
MAX_CONSECUTIVE_ERRORS: Final = 16
_backend_log = RateLimitedLog(log)


@dataclass
class Caller:
    """One connection as the handler sees it: whom its sessions belong to, whether it may
    act for chat nodes, whether it calls from an allowed network, and its run of error replies."""

    owner: str
    trusted: bool
    listed: bool  # its address is in the allowed networks: served without ``auth``
    errors: int = 0
    closed: bool = False


class PresenceHandler:
    """Turns request lines into reply lines. Safe to share between connections."""

    def __init__(self, store: PresenceStore, notifier: ChatNotifier, *, open_networks: Sequence[Network],
                 token: str = "", max_errors: int = MAX_CONSECUTIVE_ERRORS) -> None:
        self.store = store
        self.notifier = notifier
        self._open_networks = tuple(open_networks)
        self._token = token.encode("utf-8")
        self.max_errors = max_errors
        self._handlers: dict[str, Callable[[Request], Reply]] = {
            "state": self._state,
            "direct": self._notify_targets,
            "community": self._notify_targets,
            "before-enter": self._before_enter,
            "enter": self._enter,
            "signaling": self._signaling,
        }
        # The requests whose answer depends on who asks.
        self._caller_handlers: dict[str, Callable[[Request, Caller], Reply]] = {
            "auth": self._auth,
            "login": self._login,
            "logout": self._logout,
            "lease": self._lease,
            "sync": self._sync,
        }
        # The request types the metrics name (any other one counts as "other": bounded labels).
        self._kinds = frozenset(self._handlers) | frozenset(self._caller_handlers)

    def connect(self, peer_host: str) -> Caller:
        """The :class:`Caller` of a new connection from ``peer_host``."""
        listed = address_in(peer_host, self._open_networks)
        if self._token:
            return Caller(owner=connection_owner(uuid.uuid4().hex), trusted=False, listed=listed)
        return Caller(owner=host_owner(peer_host), trusted=listed, listed=listed)

    def handle_event(self, event: bytes | LineTooLongEvent, caller: Caller) -> bytes:
        """One framed event (a line, or an oversize-line marker) -> its reply line(s)."""
        if isinstance(event, LineTooLongEvent):
            metrics.presence_request("tcp", metrics.OTHER, metrics.REFUSED)
            return self._failed(caller, "line too long", event.syntax)
        return self.handle_line(event, caller)

    def handle_line(self, line: bytes, caller: Caller | None = None) -> bytes:
        """One request line -> its reply line (plus ``too many errors`` when that ends the
        caller's patience). Without ``caller``: a new connection from this host (loopback)."""
        caller = caller if caller is not None else self.connect("127.0.0.1")
        syntax: Syntax = "legacy"
        kind = metrics.OTHER
        outcome = metrics.REFUSED
        try:
            request = parse_request(line)
            syntax = request.syntax
            kind = request.type if request.type in self._kinds else metrics.OTHER
            reply = format_reply(self.handle(request, caller), syntax)
            outcome = metrics.OK
        except RequestError as error:
            return self._failed(caller, error.reason, error.syntax)
        except NotOwner:
            return self._failed(caller, NotOwner.wire_message, syntax)
        except BackendError as error:
            outcome = metrics.FAILED
            _backend_log.warning("presence store unavailable: %s", error)
            return self._failed(caller, "backend unavailable", syntax)
        except Exception:
            outcome = metrics.FAILED
            # Never put exception text on the wire: it can be security-sensitive.
            log.exception("presence request failed")
            return self._failed(caller, "internal error", syntax)
        finally:
            metrics.presence_request("tcp", kind, outcome)
        caller.errors = 0
        return reply

    def handle(self, request: Request, caller: Caller) -> Reply:
        """Dispatch one parsed request. Raises RequestError, NotOwner or BackendError."""
        kind = request.type
        if kind is None:
            raise request.error("missing field type")
        if not (caller.listed or caller.trusted or kind == "auth"):
            raise request.error("auth required" if self._token else "not allowed")
        for_caller = self._caller_handlers.get(kind)
        if for_caller is not None:
            return for_caller(request, caller)
        handler = self._handlers.get(kind)
        if handler is None:
            if request.syntax == "legacy":
                return Reply(DEFAULT_REPLY)
            raise request.error("unknown type")
        return handler(request)

    def _failed(self, caller: Caller, reason: str, syntax: Syntax) -> bytes:
        caller.errors += 1
        reply = format_error(reason, syntax)
        if caller.errors >= self.max_errors:
            caller.closed = True
            reply += format_error("too many errors", syntax)
        return reply

    # -- Who may do what -------------------------------------------------------------------------

    def _auth(self, request: Request, caller: Caller) -> Reply:
        if not self._token and not caller.listed:
            raise request.error("not allowed")  # nothing to show: only the allowed networks are served
        sent = request.text("token", required=bool(self._token)) or ""
        if self._token and not hmac.compare_digest(sent.encode("utf-8"), self._token):
            raise request.error("invalid token")
        caller.trusted = True
        return Reply(DEFAULT_REPLY)

    @staticmethod
    def _require_trusted(request: Request, caller: Caller) -> None:
        if not caller.trusted:
            raise request.error("auth required")

    # Each handler validates its fields before touching the store.

    def _login(self, request: Request, caller: Caller) -> Reply:
        session_id = _session_id(request)
        user_id = fields.required_id(request, "user_id")
        node_id = request.matching("node_id", NODE_ID_PATTERN, required=False)
        if node_id is not None:
            self._require_trusted(request, caller)
        owner = node_owner(node_id) if node_id is not None else caller.owner
        first = self.store.login(session_id, user_id, node_id, owner)
        return Reply(DEFAULT_REPLY, {"first_session": first})

    def _logout(self, request: Request, caller: Caller) -> Reply:
        session_id = _session_id(request)
        node_id = request.matching("node_id", NODE_ID_PATTERN, required=False)
        owners = [caller.owner]
        if node_id is not None:
            self._require_trusted(request, caller)
            owners.append(node_owner(node_id))
        end = self.store.logout(session_id, owners)
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

    def _lease(self, request: Request, caller: Caller) -> Reply:
        self._require_trusted(request, caller)
        self.store.renew_lease(_node_id(request))
        return Reply(DEFAULT_REPLY)

    def _sync(self, request: Request, caller: Caller) -> Reply:
        self._require_trusted(request, caller)
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
