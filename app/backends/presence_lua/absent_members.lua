-- absent_members: ARGS = room key, uid, uid, ... Returns the uids with no live session there.
local room, targets = room_key(ARGS[1]), {}
for i = 2, #ARGS do
  local uid = ARGS[i]
  local count = tonumber(redis.call('HGET', room, uid) or '0')
  if count <= 0 or not is_online(uid) then table.insert(targets, uid) end
end
return targets
