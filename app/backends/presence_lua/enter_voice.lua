-- enter_voice: ARGS = uid, cid, vid. Moves the user (and their most recent session) into
-- the voice channel. Returns JSON [occupancy of cid, voice channel left or false].
local uid, cid, vid = ARGS[1], ARGS[2], ARGS[3]
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
if top then place_session(uid, top, voice_location(cid, vid), false) end
refresh_user(uid)
return cjson.encode({occupancy_of(cid), left})
