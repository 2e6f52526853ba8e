-- move: ARGS = uid, sid ('' for the user's most recent session), text location.
-- Returns JSON [previous location], or [false] when the user has no such session.
local uid, sid, loc = ARGS[1], ARGS[2], ARGS[3]
if sid == '' then
  sid = redis.call('ZREVRANGE', sessions_key(uid), 0, 0)[1]
elseif redis.call('HGET', session_key(sid), 'uid') ~= uid then
  sid = nil
end
if not sid then return cjson.encode({false}) end
local old = place_session(uid, sid, loc, true)
refresh_user(uid)
return cjson.encode({old})
