"""Presence state in Redis: sessions, locations, voice channels, node leases.

Owns :class:`RedisPresenceStore`, the real implementation of
``app.tcp_presence.handler.PresenceStore``, and is the only presence module that imports
``redis``. Every update is one Lua script (atomic, one round trip); nothing is a
read-modify-write of a JSON string (W-14), and nothing scans the key space (W-23).

Key layout (every key starts with ``prefix``, ``presence:`` by default, because the
presence Redis may be the chat server's)::

    session:{sid}          HASH  uid, node (absent for legacy sessions without node_id)
    user:{uid}             HASH  loc = visible location, voice = "{cid}:{vid}"
    user:{uid}:sessions    ZSET  sid -> sequence number of its last location change
    user:{uid}:locs        HASH  sid -> that session's location
    user:{uid}:texts       HASH  sid -> that session's last text location
    online                 ZSET  uid -> retention deadline (ms); online = deadline >= now
    room:{c-X|r-R}         HASH  uid -> number of the user's sessions at that location
    voice:{cid}:{vid}      SET   uids in a community voice channel
    voice-index:{cid}      SET   vids of the community's voice channels
    call:{rid}             SET   uids in a DM call
    nodes                  SET   node ids with sessions
    node:{node}:sessions   SET   sids attached to the node's lease
    node:{node}:lease      STRING, TTL node_lease_s, renewed by the chat node
    node:{node}:reaper     STRING, SET NX claim of the reaper logging the node out
    sync:{node}:{sync_id}  HASH  sid -> uid, sessions staged by a chunked sync
    seq                    counter ordering location changes

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
from typing import Any, Callable, Final, Iterator, Sequence

import redis

from app.errors import BackendUnavailable
from app.settings import Settings
from app.tcp_presence.handler import (
    LocationChange,
    ReapBatch,
    SessionEnd,
    SyncOutcome,
    VoiceEntry,
    VoiceOut,
)

__all__ = ["RedisPresenceStore", "DEFAULT_PREFIX"]

DEFAULT_PREFIX: Final = "presence:"
# Redis calls are local-network round trips; past this, presence counts as down.
REDIS_TIMEOUT_S: Final = 2.0
# A chunked sync that never sends its final part is forgotten after this long.
SYNC_STAGING_TTL_S: Final = 120

# Every script starts with this prelude. ARGV[1..3] = prefix, retention (s), now (ms);
# the operation's own arguments follow from ARGV[4].
_PRELUDE = r"""
local P, RETENTION, NOW = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local DEADLINE = NOW + RETENTION * 1000
local ONLINE, NODES, SEQ = P .. 'online', P .. 'nodes', P .. 'seq'

local function session_key(sid) return P .. 'session:' .. sid end
local function user_key(uid) return P .. 'user:' .. uid end
local function sessions_key(uid) return P .. 'user:' .. uid .. ':sessions' end
local function locs_key(uid) return P .. 'user:' .. uid .. ':locs' end
local function texts_key(uid) return P .. 'user:' .. uid .. ':texts' end
local function room_key(loc) return P .. 'room:' .. loc end
local function voice_key(cid, vid) return P .. 'voice:' .. cid .. ':' .. vid end
local function voice_index_key(cid) return P .. 'voice-index:' .. cid end
local function call_key(rid) return P .. 'call:' .. rid end
local function node_sessions_key(node) return P .. 'node:' .. node .. ':sessions' end
local function lease_key(node) return P .. 'node:' .. node .. ':lease' end
local function reaper_key(node) return P .. 'node:' .. node .. ':reaper' end

local function is_online(uid)
  local deadline = redis.call('ZSCORE', ONLINE, uid)
  return deadline ~= false and tonumber(deadline) >= NOW
end

-- Only text rooms are counted: they are what notification targets are checked against.
local function is_room(loc)
  if not loc then return false end
  local head = string.sub(loc, 1, 2)
  return head == 'c-' or head == 'r-'
end

local function room_enter(loc, uid)
  if is_room(loc) then
    redis.call('HINCRBY', room_key(loc), uid, 1)
    redis.call('EXPIRE', room_key(loc), RETENTION)
  end
end

local function room_leave(loc, uid)
  if is_room(loc) and redis.call('HINCRBY', room_key(loc), uid, -1) <= 0 then
    redis.call('HDEL', room_key(loc), uid)
  end
end

-- Retention: all of a user's keys expire together, RETENTION after their last activity.
local function touch_user(uid)
  for _, sid in ipairs(redis.call('ZRANGE', sessions_key(uid), 0, -1)) do
    redis.call('EXPIRE', session_key(sid), RETENTION)
  end
  for _, key in ipairs({user_key(uid), sessions_key(uid), locs_key(uid), texts_key(uid)}) do
    redis.call('EXPIRE', key, RETENTION)
  end
end

-- Recompute the visible location (the most recently set one) and the online index.
local function refresh_user(uid)
  local top = redis.call('ZREVRANGE', sessions_key(uid), 0, 0)
  if #top == 0 then
    redis.call('HDEL', user_key(uid), 'loc')
    redis.call('ZREM', ONLINE, uid)
    touch_user(uid)
    return false
  end
  local loc = redis.call('HGET', locs_key(uid), top[1]) or 'home'
  redis.call('HSET', user_key(uid), 'loc', loc)
  redis.call('ZADD', ONLINE, DEADLINE, uid)
  touch_user(uid)
  return loc
end

local function place_session(uid, sid, loc, is_text)
  local old = redis.call('HGET', locs_key(uid), sid)
  room_leave(old, uid)
  redis.call('HSET', locs_key(uid), sid, loc)
  if is_text then redis.call('HSET', texts_key(uid), sid, loc) end
  room_enter(loc, uid)
  redis.call('ZADD', sessions_key(uid), redis.call('INCR', SEQ), sid)
  return old
end

local function split_voice(value)
  local sep = string.find(value, ':', 1, true)
  return string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
end

-- Sessions shown in a voice channel the user left go back to their text location.
local function clear_voice_location(uid, cid, vid)
  local voice_loc = 'com' .. cid .. ',c-' .. vid
  local locs = redis.call('HGETALL', locs_key(uid))
  for i = 1, #locs, 2 do
    if locs[i + 1] == voice_loc then
      local text = redis.call('HGET', texts_key(uid), locs[i]) or 'home'
      redis.call('HSET', locs_key(uid), locs[i], text)
      room_enter(text, uid)
    end
  end
end

-- {cid, vid, remaining uids}, or false when the user was in no voice channel.
local function leave_voice_of(uid)
  local current = redis.call('HGET', user_key(uid), 'voice')
  if not current then return false end
  local cid, vid = split_voice(current)
  redis.call('SREM', voice_key(cid, vid), uid)
  redis.call('HDEL', user_key(uid), 'voice')
  clear_voice_location(uid, cid, vid)
  return {cid, vid, redis.call('SMEMBERS', voice_key(cid, vid))}
end

local function attach_to_node(sid, node, lease_ms)
  local previous = redis.call('HGET', session_key(sid), 'node')
  if previous and previous ~= node then redis.call('SREM', node_sessions_key(previous), sid) end
  redis.call('HSET', session_key(sid), 'node', node)
  redis.call('SADD', node_sessions_key(node), sid)
  redis.call('SADD', NODES, node)
  redis.call('SET', lease_key(node), '1', 'PX', lease_ms)
end

-- {uid, session location, 1 if it was the user's last session, voice left}, or false.
local function end_session(sid)
  local record = redis.call('HMGET', session_key(sid), 'uid', 'node')
  local uid, node = record[1], record[2]
  if not uid then return false end
  local loc = redis.call('HGET', locs_key(uid), sid)
  room_leave(loc, uid)
  redis.call('HDEL', locs_key(uid), sid)
  redis.call('HDEL', texts_key(uid), sid)
  redis.call('ZREM', sessions_key(uid), sid)
  redis.call('DEL', session_key(sid))
  if node then redis.call('SREM', node_sessions_key(node), sid) end
  local last = redis.call('ZCARD', sessions_key(uid)) == 0
  local voice = false
  if last then voice = leave_voice_of(uid) end
  refresh_user(uid)
  return {uid, loc, last and 1 or 0, voice}
end

-- Returns 1 when this is the user's first live session.
local function start_session(sid, uid, node, lease_ms)
  local owner = redis.call('HGET', session_key(sid), 'uid')
  if owner and owner ~= uid then end_session(sid) end
  local first = 0
  if owner ~= uid then
    if redis.call('ZCARD', sessions_key(uid)) == 0 then first = 1 end
    redis.call('HSET', session_key(sid), 'uid', uid)
    -- Score 0: a new tab never takes over the location another tab set (W-11).
    redis.call('ZADD', sessions_key(uid), 0, sid)
    redis.call('HSET', locs_key(uid), sid, 'home')
    redis.call('HSET', texts_key(uid), sid, 'home')
  end
  if node ~= '' then attach_to_node(sid, node, lease_ms) end
  refresh_user(uid)
  return first
end

local function occupancy_of(cid)
  local result = {}
  for _, vid in ipairs(redis.call('SMEMBERS', voice_index_key(cid))) do
    local members = {}
    for _, uid in ipairs(redis.call('SMEMBERS', voice_key(cid, vid))) do
      if is_online(uid) then table.insert(members, uid) else redis.call('SREM', voice_key(cid, vid), uid) end
    end
    table.insert(result, {vid, members})
  end
  return result
end
"""

_LOGIN = r"""
return start_session(ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]))
"""

_LOGOUT = r"""
return cjson.encode({end_session(ARGV[4])})
"""

_MOVE = r"""
local uid, sid, loc = ARGV[4], ARGV[5], ARGV[6]
if sid == '' then
  sid = redis.call('ZREVRANGE', sessions_key(uid), 0, 0)[1]
elseif redis.call('HGET', session_key(sid), 'uid') ~= uid then
  sid = nil
end
if not sid then return cjson.encode({false}) end
local old = place_session(uid, sid, loc, true)
refresh_user(uid)
return cjson.encode({old})
"""

_ABSENT_MEMBERS = r"""
local room, targets = room_key(ARGV[4]), {}
for i = 5, #ARGV do
  local uid = ARGV[i]
  local count = tonumber(redis.call('HGET', room, uid) or '0')
  if count <= 0 or not is_online(uid) then table.insert(targets, uid) end
end
return targets
"""

_OCCUPANCY = r"""
return cjson.encode(occupancy_of(ARGV[4]))
"""

_ENTER = r"""
local uid, cid, vid = ARGV[4], ARGV[5], ARGV[6]
local wanted = cid .. ':' .. vid
local left = false
if redis.call('HGET', user_key(uid), 'voice') ~= wanted then
  left = leave_voice_of(uid)
  redis.call('SADD', voice_key(cid, vid), uid)
  redis.call('EXPIRE', voice_key(cid, vid), RETENTION)
  redis.call('SADD', voice_index_key(cid), vid)
  redis.call('EXPIRE', voice_index_key(cid), RETENTION)
  redis.call('HSET', user_key(uid), 'voice', wanted)
end
local top = redis.call('ZREVRANGE', sessions_key(uid), 0, 0)[1]
if top then place_session(uid, top, 'com' .. cid .. ',c-' .. vid, false) end
refresh_user(uid)
return cjson.encode({occupancy_of(cid), left})
"""

_LEAVE_VOICE = r"""
local uid, cid, vid = ARGV[4], ARGV[5], ARGV[6]
redis.call('SREM', voice_key(cid, vid), uid)
if redis.call('HGET', user_key(uid), 'voice') == cid .. ':' .. vid then
  redis.call('HDEL', user_key(uid), 'voice')
end
clear_voice_location(uid, cid, vid)
if redis.call('ZCARD', sessions_key(uid)) > 0 then refresh_user(uid) end
return redis.call('SMEMBERS', voice_key(cid, vid))
"""

_LEAVE_CALL = r"""
redis.call('SREM', call_key(ARGV[5]), ARGV[4])
return redis.call('SMEMBERS', call_key(ARGV[5]))
"""

_SYNC = r"""
local node, lease_ms, staging, final = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7] == '1'
local pairs_from = 8
if staging ~= '' then
  local staged_key = P .. 'sync:' .. node .. ':' .. staging
  if not final then
    for i = pairs_from, #ARGV, 2 do redis.call('HSET', staged_key, ARGV[i], ARGV[i + 1]) end
    redis.call('EXPIRE', staged_key, STAGING_TTL)
    redis.call('SET', lease_key(node), '1', 'PX', lease_ms)
    redis.call('SADD', NODES, node)
    return cjson.encode({0, 0, {}})
  end
end
local desired = {}
if staging ~= '' then
  local staged_key = P .. 'sync:' .. node .. ':' .. staging
  local flat = redis.call('HGETALL', staged_key)
  for i = 1, #flat, 2 do desired[flat[i]] = flat[i + 1] end
  redis.call('DEL', staged_key)
end
for i = pairs_from, #ARGV, 2 do desired[ARGV[i]] = ARGV[i + 1] end
local added, removed, voices = 0, 0, {}
for _, sid in ipairs(redis.call('SMEMBERS', node_sessions_key(node))) do
  local owner = redis.call('HGET', session_key(sid), 'uid')
  if desired[sid] ~= owner then
    local ended = end_session(sid)
    redis.call('SREM', node_sessions_key(node), sid)
    if ended then
      removed = removed + 1
      if ended[4] then table.insert(voices, ended[4]) end
    end
  end
end
for sid, uid in pairs(desired) do
  local record = redis.call('HMGET', session_key(sid), 'uid', 'node')
  if record[1] ~= uid or record[2] ~= node then
    start_session(sid, uid, node, lease_ms)
    added = added + 1
  end
end
redis.call('SET', lease_key(node), '1', 'PX', lease_ms)
redis.call('SADD', NODES, node)
return cjson.encode({added, removed, voices})
""".replace("STAGING_TTL", str(SYNC_STAGING_TTL_S))

_REAP = r"""
local node, batch = ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', lease_key(node)) == 1 then
  redis.call('DEL', reaper_key(node))
  return cjson.encode({{}, true})
end
local ended = {}
for _ = 1, batch do
  local sid = redis.call('SPOP', node_sessions_key(node))
  if not sid then break end
  if redis.call('HGET', session_key(sid), 'node') == node then
    local result = end_session(sid)
    if result then table.insert(ended, result) end
  end
end
local done = redis.call('SCARD', node_sessions_key(node)) == 0
if done then
  redis.call('SREM', NODES, node)
  redis.call('DEL', reaper_key(node))
end
return cjson.encode({ended, done})
"""

_FRIENDS_STATE = r"""
local result = {}
for i = 4, #ARGV do
  local loc = false
  if is_online(ARGV[i]) then loc = redis.call('HGET', user_key(ARGV[i]), 'loc') end
  table.insert(result, loc)
end
return cjson.encode(result)
"""


class RedisPresenceStore:
    """``PresenceStore`` on Redis. Methods raise ``BackendUnavailable`` when Redis is down."""

    def __init__(self, client: redis.Redis, *, retention_s: int, lease_s: float,
                 prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.retention_s = retention_s
        self.lease_ms = max(1, int(lease_s * 1000))
        self.prefix = prefix
        self.clock = clock
        self._scripts = {
            name: client.register_script(_PRELUDE + body)
            for name, body in {
                "login": _LOGIN, "logout": _LOGOUT, "move": _MOVE, "absent": _ABSENT_MEMBERS,
                "occupancy": _OCCUPANCY, "enter": _ENTER, "leave_voice": _LEAVE_VOICE,
                "leave_call": _LEAVE_CALL, "sync": _SYNC, "reap": _REAP, "friends": _FRIENDS_STATE,
            }.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings, *, prefix: str = DEFAULT_PREFIX) -> "RedisPresenceStore":
        url = settings.effective_presence_redis_url
        if not url:
            raise ValueError("PRESENCE_REDIS_URL or REDIS_URL must be set")
        client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S, decode_responses=True)
        return cls(client, retention_s=settings.presence_retention_s, lease_s=settings.node_lease_s,
                   prefix=prefix)

    def close(self) -> None:
        self.client.close()

    # -- Sessions ---------------------------------------------------------------------------

    def login(self, session_id: str, user_id: int, node_id: str | None) -> bool:
        first = self._run("login", session_id, user_id, node_id or "", self.lease_ms)
        return bool(first)

    def logout(self, session_id: str) -> SessionEnd:
        (ended,) = self._run_json("logout", session_id) or [False]
        return _session_end(ended) if ended else SessionEnd(None, None, False)

    def move(self, user_id: int, session_id: str | None, location: str) -> LocationChange:
        (last,) = self._run_json("move", user_id, session_id or "", location)
        return LocationChange(last or None, location)

    def absent_members(self, room_key: str, member_ids: Sequence[int]) -> list[int]:
        if not member_ids:
            return []
        absent = {int(uid) for uid in self._run("absent", room_key, *member_ids)}
        return [member for member in member_ids if member in absent]

    # -- Voice --------------------------------------------------------------------------------

    def voice_occupancy(self, community_id: int) -> dict[int, list[int]]:
        return _occupancy(self._run_json("occupancy", community_id))

    def enter_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceEntry:
        occupancy, left = self._run_json("enter", user_id, community_id, voice_channel_id)
        return VoiceEntry(_occupancy(occupancy), _voice_out(left))

    def leave_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceOut:
        remaining = self._run("leave_voice", user_id, community_id, voice_channel_id)
        return VoiceOut(community_id, voice_channel_id, _ids(remaining))

    def leave_call(self, user_id: int, room_id: int) -> VoiceOut:
        return VoiceOut(None, room_id, _ids(self._run("leave_call", user_id, room_id)))

    # -- Nodes --------------------------------------------------------------------------------

    def renew_lease(self, node_id: str) -> None:
        with self._backend():
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._key(f"node:{node_id}:lease"), "1", px=self.lease_ms)
            pipe.sadd(self._key("nodes"), node_id)
            pipe.execute()

    def sync_node(self, node_id: str, sessions: Sequence[tuple[str, int]], *,
                  sync_id: str | None = None, final: bool = True) -> SyncOutcome:
        flat = [part for sid, uid in sessions for part in (sid, str(uid))]
        added, removed, voices = self._run_json("sync", node_id, self.lease_ms, sync_id or "",
                                                "1" if final else "0", *flat)
        outs = tuple(out for out in (_voice_out(v) for v in _list(voices)) if out is not None)
        return SyncOutcome(int(added), int(removed), outs)

    def expired_nodes(self) -> list[str]:
        with self._backend():
            nodes = sorted(_text(node) for node in self.client.smembers(self._key("nodes")))
            if not nodes:
                return []
            pipe = self.client.pipeline(transaction=False)
            for node in nodes:
                pipe.exists(self._key(f"node:{node}:lease"))
            alive = pipe.execute()
        return [node for node, exists in zip(nodes, alive) if not exists]

    def claim_node(self, node_id: str, owner: str, ttl_s: float) -> bool:
        with self._backend():
            claimed = self.client.set(self._key(f"node:{node_id}:reaper"), owner, nx=True,
                                      px=max(1, int(ttl_s * 1000)))
        return bool(claimed)

    def reap_node(self, node_id: str, batch: int) -> ReapBatch:
        ended, done = self._run_json("reap", node_id, batch)
        return ReapBatch([_session_end(item) for item in _list(ended)], bool(done))

    # -- Reads ----------------------------------------------------------------------------------

    def friends_state(self, user_ids: Sequence[int]) -> dict[int, str | None]:
        if not user_ids:
            return {}
        locations = _list(self._run_json("friends", *user_ids))
        return {user: (loc or None) for user, loc in zip(user_ids, locations)}

    def online_users(self) -> list[int]:
        with self._backend():
            members = self.client.zrangebyscore(self._key("online"), self._now_ms(), "+inf")
        return sorted(int(_text(member)) for member in members)

    def forget_expired(self) -> int:
        with self._backend():
            return int(self.client.zremrangebyscore(self._key("online"), "-inf", f"({self._now_ms()}"))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    # -- Plumbing -------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _run(self, script: str, *args: Any) -> Any:
        with self._backend():
            return self._scripts[script](keys=[], args=[self.prefix, self.retention_s, self._now_ms(), *args])

    def _run_json(self, script: str, *args: Any) -> Any:
        return json.loads(self._run(script, *args))

    @contextmanager
    def _backend(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise BackendUnavailable("presence store unavailable") from error


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
