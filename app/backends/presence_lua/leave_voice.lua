-- leave_voice: ARGS = uid, cid, vid. Returns the uids still in the channel.
local uid, cid, vid = ARGS[1], ARGS[2], ARGS[3]
redis.call('SREM', voice_key(cid, vid), uid)
if redis.call('HGET', user_key(uid), 'voice') == cid .. ':' .. vid then
  redis.call('HDEL', user_key(uid), 'voice')
end
clear_voice_location(uid, cid, vid)
if redis.call('ZCARD', sessions_key(uid)) > 0 then refresh_user(uid) end
return redis.call('SMEMBERS', voice_key(cid, vid))
