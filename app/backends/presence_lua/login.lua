-- login: ARGS = sid, uid, node ('' for none), lease_ms, owner. Returns 1 for the user's first
-- session, 0 otherwise, and -1 (nothing done) when the session belongs to another owner.
if not owner_allowed(session_owner(ARGS[1]), {ARGS[5]}) then return -1 end
return start_session(ARGS[1], ARGS[2], ARGS[3], tonumber(ARGS[4]), ARGS[5])
