-- voice_occupancy: ARGS = cid. Returns JSON [[vid, [uid, ...]], ...] of online members.
return cjson.encode(occupancy_of(ARGS[1]))
