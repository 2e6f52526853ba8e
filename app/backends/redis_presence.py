"""Presence state in Redis: sessions, locations, voice channels, node leases.

Owns :class:`RedisPresenceStore`, the real implementation of the ``PresenceStore``
interface, and the Redis key layout (:data:`KEY_TEMPLATES`). It is the only presence
module that imports ``redis``; from the presence server it imports only the store
module (the interface and its result types), never the server, handler, HTTP API, reaper or
the chat side's client. The presence server's composition module builds it and hands
it to the server.

Every update is one Lua script (atomic, one round trip); nothing is a read-modify-write
of a JSON string (W-14), and nothing scans the key space (W-23). The scripts live in
``app/backends/presence_lua/``, one ``<name>.lua`` per operation plus ``prelude.lua``
(the helpers every script shares, prepended to each), and are read once at import.
They never spell a key name: every call passes the layout (the prefixed templates of
:data:`KEY_TEMPLATES`) and the scripts build keys from it. Locations reach them already
validated against ``app/destinations.py``.

Every key starts with ``prefix`` (``presence:`` by default, because the presence Redis may
be the chat server's); the layout, with each key's type and contents, is
:data:`KEY_TEMPLATES`.

The user's visible location (friends-state, ``USER{U}`` of the original) is the most
recently set one among their live sessions. Every user key and the user's session
records expire ``retention_s`` after the user's last activity (W-22: refreshed, never
lost after the first update). Room, voice and call sets also carry that TTL, and
entries of users who are no longer online are ignored (and pruned where cheap).

The scripts compute key names from their arguments, so they need a single Redis (or
a single-slot deployment), not Redis Cluster.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Final, Iterator, Sequence

import redis

import app.metrics as metrics
from app.destinations import HOME
from app.errors import BackendUnavailable
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

__all__ = ["RedisPresenceStore", "DEFAULT_PREFIX", "KEY_TEMPLATES"]

DEFAULT_PREFIX: Final = "presence:"
# Redis calls are local-network round trips; past this, presence counts as down.
REDIS_TIMEOUT_S: Final = 2.0
# A chunked sync that never sends its final part is forgotten after this long.
SYNC_STAGING_TTL_S: Final = 120

# The key layout, the only place a key name is spelled (after ``prefix``). ``{}`` is a
# placeholder, filled in order.
KEY_TEMPLATES: Final[dict[str, str]] = {
    "session": "session:{}",              # HASH   uid, owner, node (absent for sessions without node_id)
    "user": "user:{}",                    # HASH   loc = visible location, voice = "{cid}:{vid}"
    "user_sessions": "user:{}:sessions",  # ZSET   sid -> sequence number of its last location change
    "user_locs": "user:{}:locs",          # HASH   sid -> that session's location
    "user_texts": "user:{}:texts",        # HASH   sid -> that session's last text location
    "online": "online",                   # ZSET   uid -> retention deadline (ms); online = deadline >= now
    "room": "room:{}",                    # HASH   (room key) uid -> the user's sessions at that location
    "voice": "voice:{}:{}",               # SET    (cid, vid) uids in a community voice channel
    "voice_index": "voice-index:{}",      # SET    (cid) vids of the community's voice channels
    "call": "call:{}",                    # SET    (rid) uids in a DM call
    "nodes": "nodes",                     # SET    node ids with sessions
    "node_sessions": "node:{}:sessions",  # SET    sids attached to the node's lease
    "node_lease": "node:{}:lease",        # STRING TTL node_lease_s, renewed by the chat node
    "node_reaper": "node:{}:reaper",      # STRING SET NX claim of the reaper logging the node out
    "sync": "sync:{}:{}",                 # HASH   (node, sync id) sid -> uid, staged by a chunked sync
    "seq": "seq",                         # counter ordering location changes
}
_PLACEHOLDER: Final = "{}"

_LUA_DIR: Final = Path(__file__).with_name("presence_lua")
_SCRIPT_NAMES: Final = (
    "login", "logout", "move", "absent_members", "voice_occupancy", "enter_voice", "leave_voice",
    "leave_call", "sync_node", "reap_node", "friends_state",
)


def _read_lua(name: str) -> str:
    return (_LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


# Read once, at import: the prelude followed by each operation's body.
_SCRIPTS: Final = {name: _read_lua("prelude") + "\n" + _read_lua(name) for name in _SCRIPT_NAMES}


class KeyLayout:
    """:data:`KEY_TEMPLATES` under one prefix: key names for Python, and the same layout
    serialized for the scripts (``key()`` in prelude.lua fills it in the same way)."""

    def __init__(self, prefix: str) -> None:
        self._pieces: dict[str, list[str]] = {}
        for name, template in KEY_TEMPLATES.items():
            head, *rest = template.split(_PLACEHOLDER)
            self._pieces[name] = [prefix + head, *rest]
        self.for_scripts = json.dumps(self._pieces, separators=(",", ":"))

    def key(self, name: str, *values: object) -> str:
        head, *rest = self._pieces[name]
        return head + "".join(f"{value}{piece}" for value, piece in zip(values, rest))


class RedisPresenceStore:
    """``PresenceStore`` on Redis. Methods raise ``BackendUnavailable`` when Redis is down."""

    def __init__(self, client: redis.Redis, *, retention_s: int, lease_s: float,
                 prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.retention_s = retention_s
        self.lease_ms = max(1, int(lease_s * 1000))
        self.keys = KeyLayout(prefix)
        self.clock = clock
        self._scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}

    @classmethod
    def from_settings(cls, settings: Settings, *, prefix: str = DEFAULT_PREFIX) -> "RedisPresenceStore":
        url = settings.effective_presence_redis_url
        if not url:
            raise ValueError("PRESENCE_REDIS_URL or REDIS_URL must be set")
        # A blocking pool: a burst of logins waits for a connection instead of failing with
        # "too many connections" (redis-py's default pool raises past its size).
        pool = redis.BlockingConnectionPool.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                                     socket_connect_timeout=REDIS_TIMEOUT_S, decode_responses=True,
                                                     max_connections=settings.redis_pool_size,
                                                     timeout=settings.backend_pool_wait_s)
        client = redis.Redis(connection_pool=pool)
        return cls(client, retention_s=settings.presence_retention_s, lease_s=settings.node_lease_s,
                   prefix=prefix)

    def close(self) -> None:
        self.client.close()

    # -- Sessions ---------------------------------------------------------------------------

    def login(self, session_id: str, user_id: int, node_id: str | None, owner: str = "") -> bool:
        first = int(self._run("login", session_id, user_id, node_id or "", self.lease_ms, owner))
        if first < 0:
            raise NotOwner()
        return bool(first)

    def logout(self, session_id: str, owners: Sequence[str] | None = None) -> SessionEnd:
        checked = "0" if owners is None else "1"
        (ended,) = self._run_json("logout", session_id, checked, *(owners or ())) or [False]
        if ended == -1:
            raise NotOwner()
        return _session_end(ended) if ended else SessionEnd(None, None, False)

    def move(self, user_id: int, session_id: str | None, location: str) -> LocationChange:
        (last,) = self._run_json("move", user_id, session_id or "", location)
        return LocationChange(last or None, location)

    def absent_members(self, room_key: str, member_ids: Sequence[int]) -> list[int]:
        if not member_ids:
            return []
        absent = {int(uid) for uid in self._run("absent_members", room_key, *member_ids)}
        return [member for member in member_ids if member in absent]

    # -- Voice --------------------------------------------------------------------------------

    def voice_occupancy(self, community_id: int) -> dict[int, list[int]]:
        return _occupancy(self._run_json("voice_occupancy", community_id))

    def enter_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceEntry:
        occupancy, left = self._run_json("enter_voice", user_id, community_id, voice_channel_id)
        return VoiceEntry(_occupancy(occupancy), _voice_out(left))

    def leave_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceOut:
        remaining = self._run("leave_voice", user_id, community_id, voice_channel_id)
        return VoiceOut(community_id, voice_channel_id, _ids(remaining))

    def leave_call(self, user_id: int, room_id: int) -> VoiceOut:
        return VoiceOut(None, room_id, _ids(self._run("leave_call", user_id, room_id)))

    # -- Nodes --------------------------------------------------------------------------------

    def renew_lease(self, node_id: str) -> None:
        with self._backend("renew_lease"):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self.keys.key("node_lease", node_id), "1", px=self.lease_ms)
            pipe.sadd(self.keys.key("nodes"), node_id)
            pipe.execute()

    def sync_node(self, node_id: str, sessions: Sequence[tuple[str, int]], *,
                  sync_id: str | None = None, final: bool = True) -> SyncOutcome:
        flat = [part for sid, uid in sessions for part in (sid, str(uid))]
        added, removed, voices = self._run_json("sync_node", node_id, self.lease_ms, sync_id or "",
                                                "1" if final else "0", SYNC_STAGING_TTL_S, node_owner(node_id),
                                                *flat)
        outs = tuple(out for out in (_voice_out(v) for v in _list(voices)) if out is not None)
        return SyncOutcome(int(added), int(removed), outs)

    def expired_nodes(self) -> list[str]:
        with self._backend("expired_nodes"):
            nodes = sorted(_text(node) for node in self.client.smembers(self.keys.key("nodes")))
            if not nodes:
                return []
            pipe = self.client.pipeline(transaction=False)
            for node in nodes:
                pipe.exists(self.keys.key("node_lease", node))
            alive = pipe.execute()
        return [node for node, exists in zip(nodes, alive) if not exists]

    def claim_node(self, node_id: str, owner: str, ttl_s: float) -> bool:
        with self._backend("claim_node"):
            claimed = self.client.set(self.keys.key("node_reaper", node_id), owner, nx=True,
                                      px=max(1, int(ttl_s * 1000)))
        return bool(claimed)

    def reap_node(self, node_id: str, batch: int) -> ReapBatch:
        ended, done = self._run_json("reap_node", node_id, batch)
        return ReapBatch([_session_end(item) for item in _list(ended)], bool(done))

    # -- Reads ----------------------------------------------------------------------------------

    def friends_state(self, user_ids: Sequence[int]) -> dict[int, str | None]:
        if not user_ids:
            return {}
        locations = _list(self._run_json("friends_state", *user_ids))
        return {user: (loc or None) for user, loc in zip(user_ids, locations)}

    def online_users(self) -> list[int]:
        with self._backend("online_users"):
            members = self.client.zrangebyscore(self.keys.key("online"), self._now_ms(), "+inf")
        return sorted(int(_text(member)) for member in members)

    def forget_expired(self) -> int:
        with self._backend("forget_expired"):
            return int(self.client.zremrangebyscore(self.keys.key("online"), "-inf", f"({self._now_ms()}"))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    # -- Plumbing -------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _run(self, script: str, *args: Any) -> Any:
        with self._backend(script):
            header = [self.keys.for_scripts, HOME, self.retention_s, self._now_ms()]  # see prelude.lua
            return self._scripts[script](keys=[], args=[*header, *args])

    def _run_json(self, script: str, *args: Any) -> Any:
        return json.loads(self._run(script, *args))

    @contextmanager
    def _backend(self, operation: str) -> Iterator[None]:
        """One store operation (a script, a pipeline, a command): timed for the metrics, failures mapped."""
        try:
            with metrics.backend_timed("redis", operation):
                yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            # No chained traceback: the handler logs the message, rate-limited.
            raise BackendUnavailable(f"presence store unavailable: {error}") from None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}.
    return [] if value == {} or value is None else list(value)


def _ids(values: Any) -> tuple[int, ...]:
    return tuple(sorted(int(value) for value in _list(values)))


def _occupancy(pairs: Any) -> dict[int, list[int]]:
    return {int(vid): sorted(int(uid) for uid in _list(members)) for vid, members in _list(pairs)}


def _voice_out(value: Any) -> VoiceOut | None:
    if not value:
        return None
    community_id, channel_id, remaining = value
    return VoiceOut(int(community_id), int(channel_id), _ids(remaining))


def _session_end(value: Sequence[Any]) -> SessionEnd:
    user_id, location, last, voice = value
    return SessionEnd(int(user_id), location or None, bool(last), _voice_out(voice))
