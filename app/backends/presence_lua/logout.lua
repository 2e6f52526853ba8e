-- logout: ARGS = sid, checked ('1': only the owners that follow may end it; '0': anyone),
-- then the allowed owners. Returns JSON [end_session(sid)] (see prelude.lua), or
-- [-1] (nothing done) when the session belongs to another owner.
if ARGS[2] == '1' and not owner_allowed(session_owner(ARGS[1]), {unpack(ARGS, 3)}) then
  return cjson.encode({-1})
end
return cjson.encode({end_session(ARGS[1])})
