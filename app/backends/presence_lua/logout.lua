-- logout: ARGS = sid. Returns JSON [end_session(sid)] (see prelude.lua).
return cjson.encode({end_session(ARGS[1])})
