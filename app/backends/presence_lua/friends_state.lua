-- friends_state: ARGS = uid, uid, ... Returns JSON [visible location or false, ...].
local result = {}
for i = 1, #ARGS do
  local loc = false
  if is_online(ARGS[i]) then loc = redis.call('HGET', user_key(ARGS[i]), 'loc') end
  table.insert(result, loc)
end
return cjson.encode(result)
