-- reap_node: ARGS = node, batch size. Ends up to `batch` sessions of a node whose lease
-- expired (none if it was renewed meanwhile). Returns JSON [[end_session result, ...], done].
local node, batch = ARGS[1], tonumber(ARGS[2])
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
