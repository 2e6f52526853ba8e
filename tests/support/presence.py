"""Test helpers for the presence server.

- :class:`MemoryPresenceStore`: an in-memory ``PresenceStore`` with the semantics of
  ``RedisPresenceStore`` (unit tests of the handler; the integration tests check the
  real store through the real process).
- :class:`RecordingNotifier`: a ``ChatNotifier`` that records calls.
- :class:`ChatStub`: a real HTTP server (gevent pywsgi on a free port) standing in for
  the chat server; it records the presence server's POSTs and can be told to fail.
- :class:`LineClient`: a raw TCP client speaking CRLF lines, for byte-exact checks.
- :func:`presence_settings`, :func:`fresh_user_ids`: settings on a Redis database of
  their own (so the presence tests never reap another suite's nodes) and user ids no
  other test uses.
"""

from __future__ import annotations

import itertools
import json
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from gevent.event import Event
from gevent.pywsgi import WSGIServer

from app.destinations import HOME, parse_room_key, voice_location
from app.embedded import EmbeddedStack
from app.settings import Settings
from app.tcp_presence.store import (
    LocationChange,
    NotOwner,
    ReapBatch,
    SessionEnd,
    SyncOutcome,
    VoiceEntry,
    VoiceOut,
    node_owner,
)

__all__ = [
    "MemoryPresenceStore",
    "RecordingNotifier",
    "ChatStub",
    "Post",
    "LineClient",
    "presence_settings",
    "fresh_user_ids",
    "http_json",
    "PRESENCE_TEST_DB",
]

# The Redis database the presence tests use (the chat suites use database 0).
PRESENCE_TEST_DB = 9
_ID_BLOCKS = itertools.count(random.randrange(10**6, 10**8) * 1000, 1000)


def fresh_user_ids(count: int = 5) -> list[int]:
    """``count`` user ids that no other test of this session uses."""
    base = next(_ID_BLOCKS)
    return [base + offset for offset in range(1, count + 1)]


def presence_settings(embedded: EmbeddedStack, **overrides: Any) -> Settings:
    """``make_settings`` with the presence state on :data:`PRESENCE_TEST_DB`."""
    from tests.conftest import make_settings

    redis_url = embedded.redis_url.rsplit("/", 1)[0] + f"/{PRESENCE_TEST_DB}"
    return make_settings(embedded, **{"presence_redis_url": redis_url, **overrides})


def http_json(url: str, body: Any = None, *, method: str | None = None, timeout: float = 10.0,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One HTTP request with an optional JSON body; returns (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


# -- In-memory store ------------------------------------------------------------------------


@dataclass
class _Session:
    user_id: int
    node_id: str | None
    owner: str = ""
    location: str = HOME
    text: str = HOME
    order: int = 0


def _is_room(location: str | None) -> bool:
    return location is not None and parse_room_key(location) is not None


@dataclass
class MemoryPresenceStore:
    """``PresenceStore`` in dicts, without retention. ``now`` drives lease expiry."""

    lease_s: float = 15.0
    now: float = 0.0
    sessions: dict[str, _Session] = field(default_factory=dict)
    voice: dict[int, tuple[int, int]] = field(default_factory=dict)
    voice_sets: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    calls: dict[int, set[int]] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    claims: dict[str, str] = field(default_factory=dict)
    staged: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    _sequence: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # Sessions

    def user_sessions(self, user_id: int) -> dict[str, _Session]:
        return {sid: s for sid, s in self.sessions.items() if s.user_id == user_id}

    def visible_location(self, user_id: int) -> str | None:
        mine = self.user_sessions(user_id)
        if not mine:
            return None
        return max(mine.items(), key=lambda item: (item[1].order, item[0]))[1].location

    def login(self, session_id: str, user_id: int, node_id: str | None, owner: str = "") -> bool:
        existing = self.sessions.get(session_id)
        if existing is not None and existing.owner and existing.owner != owner:
            raise NotOwner()
        if existing is not None and existing.user_id != user_id:
            self.logout(session_id)
            existing = None
        first = existing is None and not self.user_sessions(user_id)
        if existing is None:
            existing = self.sessions[session_id] = _Session(user_id, None)
        existing.owner = owner or existing.owner
        if node_id:
            existing.node_id = node_id
            self.renew_lease(node_id)
        return first

    def logout(self, session_id: str, owners: Sequence[str] | None = None) -> SessionEnd:
        current = self.sessions.get(session_id)
        if owners is not None and current is not None and current.owner and current.owner not in owners:
            raise NotOwner()
        session = self.sessions.pop(session_id, None)
        if session is None:
            return SessionEnd(None, None, False)
        last = not self.user_sessions(session.user_id)
        left = self._leave_current_voice(session.user_id) if last else None
        return SessionEnd(session.user_id, session.location, last, left)

    def move(self, user_id: int, session_id: str | None, location: str) -> LocationChange:
        target = self._target_session(user_id, session_id)
        if target is None:
            return LocationChange(None, location)
        last = target.location
        target.location = target.text = location
        target.order = next(self._sequence)
        return LocationChange(last, location)

    def _target_session(self, user_id: int, session_id: str | None) -> _Session | None:
        if session_id is not None:
            session = self.sessions.get(session_id)
            return session if session is not None and session.user_id == user_id else None
        mine = self.user_sessions(user_id)
        if not mine:
            return None
        return max(mine.items(), key=lambda item: (item[1].order, item[0]))[1]

    def absent_members(self, room_key: str, member_ids: Sequence[int]) -> list[int]:
        inside = {s.user_id for s in self.sessions.values() if s.location == room_key and _is_room(room_key)}
        return [member for member in member_ids if member not in inside]

    # Voice

    def voice_occupancy(self, community_id: int) -> dict[int, list[int]]:
        return {vid: sorted(u for u in users if self.user_sessions(u))
                for (cid, vid), users in self.voice_sets.items() if cid == community_id}

    def enter_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceEntry:
        left = None
        if self.voice.get(user_id) != (community_id, voice_channel_id):
            left = self._leave_current_voice(user_id)
            self.voice_sets.setdefault((community_id, voice_channel_id), set()).add(user_id)
            self.voice[user_id] = (community_id, voice_channel_id)
        target = self._target_session(user_id, None)
        if target is not None:
            target.location = voice_location(community_id, voice_channel_id)
            target.order = next(self._sequence)
        return VoiceEntry(self.voice_occupancy(community_id), left)

    def leave_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceOut:
        key = (community_id, voice_channel_id)
        self.voice_sets.setdefault(key, set()).discard(user_id)
        if self.voice.get(user_id) == key:
            del self.voice[user_id]
        self._clear_voice_location(user_id, *key)
        return VoiceOut(community_id, voice_channel_id, tuple(sorted(self.voice_sets[key])))

    def _leave_current_voice(self, user_id: int) -> VoiceOut | None:
        current = self.voice.get(user_id)
        return None if current is None else self.leave_voice(user_id, *current)

    def _clear_voice_location(self, user_id: int, community_id: int, voice_channel_id: int) -> None:
        for session in self.user_sessions(user_id).values():
            if session.location == voice_location(community_id, voice_channel_id):
                session.location = session.text

    def leave_call(self, user_id: int, room_id: int) -> VoiceOut:
        members = self.calls.setdefault(room_id, set())
        members.discard(user_id)
        return VoiceOut(None, room_id, tuple(sorted(members)))

    # Nodes

    def renew_lease(self, node_id: str) -> None:
        self.leases[node_id] = self.now + self.lease_s
        self.nodes.add(node_id)

    def sync_node(self, node_id: str, sessions: Sequence[tuple[str, int]], *,
                  sync_id: str | None = None, final: bool = True) -> SyncOutcome:
        desired = self.staged.setdefault((node_id, sync_id or ""), {})
        desired.update(dict(sessions))
        self.renew_lease(node_id)
        if not final:
            return SyncOutcome(0, 0)
        del self.staged[(node_id, sync_id or "")]
        removed, outs = 0, []
        for sid, session in list(self.sessions.items()):
            if session.node_id == node_id and desired.get(sid) != session.user_id:
                end = self.logout(sid)
                removed += 1
                if end.voice_left is not None:
                    outs.append(end.voice_left)
        added = 0
        for sid, user_id in desired.items():
            current = self.sessions.get(sid)
            if current is None or current.user_id != user_id or current.node_id != node_id:
                if current is not None:
                    current.owner = node_owner(node_id)
                self.login(sid, user_id, node_id, node_owner(node_id))
                added += 1
        return SyncOutcome(added, removed, tuple(outs))

    def expired_nodes(self) -> list[str]:
        return sorted(node for node in self.nodes if self.leases.get(node, 0) <= self.now)

    def claim_node(self, node_id: str, owner: str, ttl_s: float) -> bool:
        return self.claims.setdefault(node_id, owner) == owner

    def reap_node(self, node_id: str, batch: int) -> ReapBatch:
        if self.leases.get(node_id, 0) > self.now:
            return ReapBatch([], True)
        mine = [sid for sid, s in self.sessions.items() if s.node_id == node_id]
        ended = [self.logout(sid) for sid in mine[:batch]]
        done = len(mine) <= batch
        if done:
            self.nodes.discard(node_id)
            self.claims.pop(node_id, None)
        return ReapBatch(ended, done)

    # Reads

    def friends_state(self, user_ids: Sequence[int]) -> dict[int, str | None]:
        return {user: self.visible_location(user) for user in user_ids}

    def online_users(self) -> list[int]:
        return sorted({s.user_id for s in self.sessions.values()})

    def forget_expired(self) -> int:
        return 0

    def ping(self) -> bool:
        return True


@dataclass
class RecordingNotifier:
    voice_outs: list[VoiceOut] = field(default_factory=list)
    offline: list[tuple[int, str | None]] = field(default_factory=list)

    def voice_out(self, out: VoiceOut) -> None:
        self.voice_outs.append(out)

    def user_offline(self, user_id: int, location: str | None) -> None:
        self.offline.append((user_id, location))


# -- A stand-in chat server ------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    path: str
    body: Any
    headers: dict[str, str]


class ChatStub:
    """A real HTTP server that records POSTs; ``fail_next(n)`` answers 500 n times."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self._arrived = Event()
        self._failures_left = 0
        self.failed = 0
        self._server = WSGIServer(("127.0.0.1", 0), self._app, log=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> "ChatStub":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def fail_next(self, count: int) -> None:
        self._failures_left = count

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        if self._failures_left > 0:
            self._failures_left -= 1
            self.failed += 1
            start_response("500 Internal Server Error", [("Content-Length", "0")])
            return [b""]
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        self.posts.append(Post(environ["PATH_INFO"], json.loads(raw or b"null"), headers))
        self._arrived.set()
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    def wait_for(self, predicate: Any, timeout: float) -> list[Post]:
        """The recorded POSTs matching ``predicate``, waiting up to ``timeout`` for one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [post for post in self.posts if predicate(post)]
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            self._arrived.clear()
            self._arrived.wait(min(remaining, 0.05))


# -- Raw line client -------------------------------------------------------------------------------


class LineClient:
    """One TCP connection to the presence server; every wait is bounded."""

    def __init__(self, port: int, *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        """The next reply line, CRLF included."""
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("presence closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def request(self, line: str | bytes) -> bytes:
        raw = line.encode("utf-8") if isinstance(line, str) else line
        self.send(raw + b"\r\n")
        return self.read_line()

    def json(self, **request: Any) -> dict[str, Any]:
        reply = self.request(json.dumps(request))
        decoded = json.loads(reply)
        assert isinstance(decoded, dict)
        return decoded

    def close(self) -> None:
        self.sock.close()
