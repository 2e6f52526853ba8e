-- login: ARGS = sid, uid, node ('' for none), lease_ms. Returns 1 for the user's first session.
return start_session(ARGS[1], ARGS[2], ARGS[3], tonumber(ARGS[4]))
