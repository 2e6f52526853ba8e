-- sync_node: ARGS = node, lease_ms, sync id ('' when not staged), final ('1'/'0'),
-- staging TTL (s), the node's owner string, then sid, uid, sid, uid, ...
-- A non-final part only stages its pairs; the final one makes the node's session set
-- exactly the staged pairs plus its own. Returns JSON [added, removed, [voice left, ...]].
local node, lease_ms, staging, final = ARGS[1], tonumber(ARGS[2]), ARGS[3], ARGS[4] == '1'
local staging_ttl, node_owner = tonumber(ARGS[5]), ARGS[6]
local pairs_from = 7
if staging ~= '' and not final then
  local staged_key = sync_key(node, staging)
  for i = pairs_from, #ARGS, 2 do redis.call('HSET', staged_key, ARGS[i], ARGS[i + 1]) end
  redis.call('EXPIRE', staged_key, staging_ttl)
  redis.call('SET', lease_key(node), '1', 'PX', lease_ms)
  redis.call('SADD', NODES, node)
  return cjson.encode({0, 0, {}})
end
local desired = {}
if staging ~= '' then
  local staged_key = sync_key(node, staging)
  local flat = redis.call('HGETALL', staged_key)
  for i = 1, #flat, 2 do desired[flat[i]] = flat[i + 1] end
  redis.call('DEL', staged_key)
end
for i = pairs_from, #ARGS, 2 do desired[ARGS[i]] = ARGS[i + 1] end
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
    start_session(sid, uid, node, lease_ms, node_owner)
    added = added + 1
  end
end
redis.call('SET', lease_key(node), '1', 'PX', lease_ms)
redis.call('SADD', NODES, node)
return cjson.encode({added, removed, voices})
