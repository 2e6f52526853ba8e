-- Shared by every presence script (app/backends/redis_presence.py prepends it).
--
-- ARGV[1..4], passed by RedisPresenceStore._run:
--   1  the key layout: JSON {name: [text, text, ...]}, the prefixed key templates of
--      KEY_TEMPLATES in redis_presence.py split at their placeholders. Keys are only ever
--      built with key(); no script spells a key name.
--   2  the home location (app.destinations.HOME)
--   3  retention in seconds
--   4  now, in milliseconds
-- The operation's own arguments follow; they are copied to ARGS[1..n].

local LAYOUT, HOME = cjson.decode(ARGV[1]), ARGV[2]
local RETENTION, NOW = tonumber(ARGV[3]), tonumber(ARGV[4])
local DEADLINE = NOW + RETENTION * 1000
local ARGS = {}
for i = 5, #ARGV do ARGS[i - 4] = ARGV[i] end

-- The key called `name`, its placeholders filled with the arguments in order.
local function key(name, ...)
  local parts, values = LAYOUT[name], {...}
  local result = parts[1]
  for i = 1, #values do result = result .. values[i] .. parts[i + 1] end
  return result
end

local ONLINE, NODES, SEQ = key('online'), key('nodes'), key('seq')

local function session_key(sid) return key('session', sid) end
local function user_key(uid) return key('user', uid) end
local function sessions_key(uid) return key('user_sessions', uid) end
local function locs_key(uid) return key('user_locs', uid) end
local function texts_key(uid) return key('user_texts', uid) end
local function room_key(loc) return key('room', loc) end
local function voice_key(cid, vid) return key('voice', cid, vid) end
local function voice_index_key(cid) return key('voice_index', cid) end
local function call_key(rid) return key('call', rid) end
local function node_sessions_key(node) return key('node_sessions', node) end
local function lease_key(node) return key('node_lease', node) end
local function reaper_key(node) return key('node_reaper', node) end
local function sync_key(node, sync_id) return key('sync', node, sync_id) end

-- Locations: app/destinations.py is the source of truth and Python has validated every
-- location it passes. These two helpers mirror it for locations read back from Redis.

-- Whether a stored location is a room key (``c-X``/``r-R``); home and voice are not.
-- Only text rooms are counted: they are what notification targets are checked against.
local function is_room(loc)
  if not loc then return false end
  local head = string.sub(loc, 1, 2)
  return head == 'c-' or head == 'r-'
end

-- app.destinations.voice_location: 'com3,c-12'.
local function voice_location(cid, vid)
  return 'com' .. cid .. ',c-' .. vid
end

local function is_online(uid)
  local deadline = redis.call('ZSCORE', ONLINE, uid)
  return deadline ~= false and tonumber(deadline) >= NOW
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
  for _, user_owned in ipairs({user_key(uid), sessions_key(uid), locs_key(uid), texts_key(uid)}) do
    redis.call('EXPIRE', user_owned, RETENTION)
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
  local loc = redis.call('HGET', locs_key(uid), top[1]) or HOME
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

-- The user hash's 'voice' field is "{cid}:{vid}".
local function split_voice(value)
  local sep = string.find(value, ':', 1, true)
  return string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
end

-- Sessions shown in a voice channel the user left go back to their text location.
local function clear_voice_location(uid, cid, vid)
  local voice_loc = voice_location(cid, vid)
  local locs = redis.call('HGETALL', locs_key(uid))
  for i = 1, #locs, 2 do
    if locs[i + 1] == voice_loc then
      local text = redis.call('HGET', texts_key(uid), locs[i]) or HOME
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

-- Who may end a session: the owner recorded at login (its connection, host or chat node,
-- spelled by Python), or false for a session recorded before owners were.
local function session_owner(sid)
  return redis.call('HGET', session_key(sid), 'owner')
end

-- Whether `owner` is one of the comma-free owner strings in `allowed` (a Lua list).
local function owner_allowed(owner, allowed)
  if not owner then return true end
  for _, candidate in ipairs(allowed) do
    if candidate == owner then return true end
  end
  return false
end

-- Returns 1 when this is the user's first live session.
local function start_session(sid, uid, node, lease_ms, owner)
  local previous = redis.call('HGET', session_key(sid), 'uid')
  if previous and previous ~= uid then end_session(sid) end
  local first = 0
  if owner ~= '' then redis.call('HSET', session_key(sid), 'owner', owner) end
  if previous ~= uid then
    if redis.call('ZCARD', sessions_key(uid)) == 0 then first = 1 end
    redis.call('HSET', session_key(sid), 'uid', uid)
    -- Score 0: a new tab never takes over the location another tab set (W-11).
    redis.call('ZADD', sessions_key(uid), 0, sid)
    redis.call('HSET', locs_key(uid), sid, HOME)
    redis.call('HSET', texts_key(uid), sid, HOME)
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
