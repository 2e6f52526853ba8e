-- leave_call: ARGS = uid, rid. Returns the uids still in the DM call.
redis.call('SREM', call_key(ARGS[2]), ARGS[1])
return redis.call('SMEMBERS', call_key(ARGS[2]))
