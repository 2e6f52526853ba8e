"""The OpenAPI 3.1 descriptions of Smooth's HTTP APIs: the one place they are written.

- :func:`chat_document`: every HTTP endpoint of the chat server except the SockJS transports
  under ``/my-chat`` (the SockJS protocol, described by SockJS itself) and the static client
  scripts; served at ``/chat-server/openapi.json`` (app/web.py).
- :func:`presence_document`: the presence server's HTTP API; served at
  ``/presence-server/openapi.json`` (app/tcp_presence/http.py).

Built from plain dicts once per call; the envelope (app/http_envelope.py) and the error
statuses each route can answer are stated once here. tests/integration/test_openapi.py checks
real answers of both servers against these documents, and that every route the chat server's
Flask app has is described.
"""

from __future__ import annotations

from typing import Any

__all__ = ["chat_document", "presence_document", "OPENAPI_VERSION", "CHAT_PATH", "PRESENCE_PATH"]

OPENAPI_VERSION = "3.1.0"
CHAT_PATH = "/chat-server/openapi.json"
PRESENCE_PATH = "/presence-server/openapi.json"
JSON = "application/json"

Schema = dict[str, Any]


# -- building blocks -------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _envelope(result: Schema | None = None) -> Schema:
    """The success envelope, with ``result`` when the route answers one."""
    if result is None:
        return _ref("Success")
    return {"allOf": [_ref("Success"), {"type": "object", "required": ["result"], "properties": {"result": result}}]}


_ERROR_TEXT = {
    400: "Invalid input; `message` names the field",
    401: "Missing, invalid or expired token (or a wrong service token)",
    403: "Not a member, not the author, or a user token on a service endpoint",
    404: "Not found",
    408: "The request body stalled (`CHAT_BODY_IDLE_TIMEOUT_S` without a byte)",
    410: "The room's log no longer holds events that old: reload history",
    413: "Body or file too large",
    415: "File type not allowed (`UPLOAD_ALLOWED_TYPES`)",
    503: "A backend (MongoDB, Redis, Kafka, presence) is unavailable",
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(_ref("Error"), _ERROR_TEXT[status]) for status in statuses}


def _query(name: str, schema: Schema, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "description": description}


def _operation(summary: str, responses: dict[str, Any], *, tag: str, security: list[dict[str, list[str]]],
               **more: Any) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "security": security, "responses": responses, **more}


USER = [{"bearer": []}, {"accessToken": []}]
SERVICE = [{"serviceToken": []}, {}]  # {}: no credential, from SERVICE_ALLOWED_NETWORKS, while SERVICE_TOKEN is unset
# The same, for the endpoints where the service token may also come as a bearer credential.
SERVICE_OR_BEARER = [{"serviceToken": []}, {"serviceBearer": []}, {}]
PUBLIC: list[dict[str, list[str]]] = [{}]


# -- components --------------------------------------------------------------------------------


_ID = {"type": "integer", "minimum": 1}
_ID_OR_TEXT = {"oneOf": [_ID, {"type": "string", "pattern": "^[1-9][0-9]*$"}]}
_NULLABLE_TEXT = {"type": ["string", "null"]}

_SCHEMAS: dict[str, Schema] = {
    "Success": {
        "type": "object", "required": ["isSuccess", "code", "message"],
        "properties": {"isSuccess": {"const": True}, "code": {"const": 1000}, "message": {"type": "string"}},
    },
    "Error": {
        "type": "object", "required": ["isSuccess", "code", "message"], "additionalProperties": False,
        "properties": {"isSuccess": {"const": False}, "code": {"type": "integer"}, "message": {"type": "string"}},
    },
    "HistoryItem": {
        "type": "object",
        "required": ["id", "name", "profileImage", "userId", "message", "thumbnail", "fileType", "type", "time",
                     "parentId", "parentName", "parentContent", "edited", "seq"],
        "properties": {
            "id": {"type": "string"}, "name": _NULLABLE_TEXT, "profileImage": _NULLABLE_TEXT, "userId": _ID,
            "message": {"type": "string", "description": "the content, or a file message's download path"},
            "thumbnail": _NULLABLE_TEXT, "fileType": _NULLABLE_TEXT, "type": {"type": "null"},
            "time": {"type": "string", "description": "local time of the message, ISO 8601"},
            "parentId": _NULLABLE_TEXT, "parentName": _NULLABLE_TEXT, "parentContent": _NULLABLE_TEXT,
            "edited": {"type": "boolean"},
            "seq": {"type": ["integer", "null"], "description": "number in the room (null before sequences existed)"},
        },
    },
    "CatchUp": {
        "type": "object", "required": ["events", "next", "latest"],
        "description": "The room's events after `after_seq`; read on with `after_seq=next` until `next == latest`",
        "properties": {
            "events": {"type": "array", "items": {"type": "object", "required": ["type"],
                                                  "description": "the MESSAGE body each event was pushed as"}},
            "next": {"type": "integer", "minimum": 0}, "latest": {"type": "integer", "minimum": 0},
        },
    },
    "Upload": {
        "type": "object", "required": ["id", "url", "thumbnail"],
        "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "thumbnail": _NULLABLE_TEXT},
    },
    "RoomCount": {
        "type": "object", "required": ["roomId", "count", "localDateTime"], "additionalProperties": False,
        "properties": {"roomId": _ID, "count": {"type": "integer", "minimum": 0},
                       "localDateTime": {"type": ["string", "null"], "pattern": "^[0-9]{17}$",
                                         "description": "the latest message's yyyyMMddHHmmssSSS"}},
    },
    "IdList": {"type": "array", "items": _ID_OR_TEXT},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Readiness": {
        "type": "object", "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"enum": ["ok", "down", "timeout"]}},
            "down": {"type": "array", "items": {"type": "string"}},
            "outbox_backlog": {"type": "integer", "minimum": 0,
                               "description": "stored events this worker has not got the broker to take yet"},
        },
    },
    "OpenApi": {"type": "object", "required": ["openapi", "info", "paths"]},
}

_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "The auth service's HS256 JWT; the raw token without `Bearer ` is accepted too"},
    "accessToken": {"type": "apiKey", "in": "header", "name": "access-token", "description": "The raw JWT"},
    "serviceToken": {"type": "apiKey", "in": "header", "name": "X-Service-Token",
                     "description": "`SERVICE_TOKEN`; user tokens never open service endpoints"},
    "serviceBearer": {"type": "http", "scheme": "bearer",
                      "description": "`SERVICE_TOKEN` as a bearer credential, as Prometheus's `authorization` "
                                     "setting sends it (`/metrics` and presence's `user-state` only)"},
}
# What the presence server's document needs of them (its guarded paths: /metrics, user-state).
_SERVICE_SCHEMES = {name: _SECURITY_SCHEMES[name] for name in ("serviceToken", "serviceBearer")}


# -- the chat server -----------------------------------------------------------------------------


def _history(kind: str) -> dict[str, Any]:
    room = "DM room" if kind == "direct" else "text channel"
    parameters = [
        _query("ch_id", {"type": "string", "pattern": "^[1-9][0-9]*$"}, f"the {room}", required=True),
        _query("page", {"type": "integer", "minimum": 0}, "page number, newest first (default 0)"),
        _query("size", {"type": "integer", "minimum": 1},
               "page size (default `HISTORY_PAGE_SIZE`; above `HISTORY_MAX_PAGE_SIZE`: 400)"),
        _query("before", {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"},
               "stable cursor: only messages older than this message of the room"),
        _query("after_seq", {"type": "integer", "minimum": 0},
               "catch-up instead of a page: the room's events numbered after this"),
    ]
    result = {"oneOf": [{"type": "array", "items": _ref("HistoryItem")}, _ref("CatchUp")]}
    return {"get": _operation(
        f"History of a {room}: a page of messages (oldest first), or with `after_seq` its events",
        {"200": _json(_envelope(result), "A page, or a catch-up"), **_errors(400, 401, 403, 410, 503)},
        tag="history", security=USER, parameters=parameters)}


def _upload(kind: str) -> dict[str, Any]:
    fields: Schema = {
        "image": {"type": "string", "contentMediaType": "application/octet-stream"},
        "thumbnail": {"type": "string", "contentMediaType": "application/octet-stream"},
        "channelId": {"type": "string"}, "fileType": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,32}$"},
        "name": {"type": "string"}, "profileImage": {"type": "string"},
    }
    required = ["image", "channelId", "fileType"]
    if kind == "channel":
        fields["communityId"] = {"type": "string"}
        required.append("communityId")
    body = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": required, "properties": fields}}}}
    return {"post": _operation(
        f"Send a file to a {'DM room' if kind == 'direct' else 'text channel'}: stored, then a file message",
        {"200": _json(_envelope(_ref("Upload")), "Stored; the file message is on its way"),
         **_errors(400, 401, 403, 408, 413, 415, 503)},
        tag="files", security=USER, requestBody=body)}


def _overwrite(what: str) -> dict[str, Any]:
    return {"put": _operation(
        f"Replace the cached {what} (the community service)",
        {"200": _json(_envelope(), "Replaced"), **_errors(400, 401, 403, 408, 413, 503)},
        tag="service", security=SERVICE, parameters=[_path_id("ident", "the room or community")],
        requestBody={"required": True, "content": {JSON: {"schema": _ref("IdList")}}})}


def _callback(summary: str, body: Schema) -> dict[str, Any]:
    return {"post": _operation(
        summary, {"200": {"description": "Published (empty body)"}, **_errors(400, 401, 403, 408, 503)},
        tag="service", security=SERVICE, requestBody={"required": True, "content": {JSON: {"schema": body}}})}


# Prometheus's text exposition format (app/metrics.py), on both servers.
_METRICS = {"get": _operation(
    "Prometheus metrics (text exposition format 0.0.4), for trusted services (the scraper)",
    {"200": {"description": "Every metric family",
             "content": {"text/plain": {"schema": {"type": "string"}}}},
     **_errors(401, 403)},
    tag="health", security=SERVICE_OR_BEARER)}


def _chat_paths() -> dict[str, Any]:
    voice_out = {"type": "object", "properties": {"type": {"type": "string"}, "communityId": _ID_OR_TEXT,
                                                  "channelId": {"type": "string"}, "ids": _ref("IdList")}}
    return {
        "/healthz": {"get": _operation("Alive while the process serves HTTP",
                                       {"200": _json(_ref("Health"), "Alive")}, tag="health", security=PUBLIC)},
        "/readyz": {"get": _operation(
            "Ready: MongoDB, Redis and the Kafka consumer's positions",
            {"200": _json(_ref("Readiness"), "Ready"), "503": _json(_ref("Readiness"), "Something is down")},
            tag="health", security=PUBLIC)},
        CHAT_PATH: {"get": _operation("This document", {"200": _json(_ref("OpenApi"), "OpenAPI 3.1")},
                                      tag="meta", security=PUBLIC)},
        "/metrics": _METRICS,
        "/chat-server/direct": _history("direct"),
        "/chat-server/community": _history("channel"),
        "/chat-server/file": _upload("direct"),
        "/chat-server/channel/file": _upload("channel"),
        "/chat-server/file/{key}": {"get": _operation(
            "Download a file (room members only)",
            {"200": {"description": "The file, with its content type and Content-Disposition",
                     "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
             **_errors(401, 403, 404, 503)},
            tag="files", security=USER,
            parameters=[{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/chat-server/message-count": {"post": _operation(
            "Unread counts of DM rooms: a bare array, rooms with messages first, newest first",
            {"200": _json({"type": "array", "items": _ref("RoomCount")}, "Counts"), **_errors(400, 401, 403, 408, 413, 503)},
            tag="rooms", security=[*USER, {"serviceToken": []}],
            requestBody={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["roomIds"],
                "properties": {"userId": _ID_OR_TEXT, "roomIds": _ref("IdList")}}}}})},
        "/chat-server/room-user-list/{ident}": _overwrite("members of a DM room"),
        "/chat-server/community-user-list/{ident}": _overwrite("members of a community"),
        "/chat-server/community-channel-list/{ident}": _overwrite("text channels of a community"),
        "/chat-server/signaling-list-community": _callback(
            "Presence: users left a community's voice channel (pushed to /topic/community/{C})", voice_out),
        "/chat-server/signaling-list-direct": _callback(
            "Presence: users left a DM call (pushed to /topic/direct/{room})", voice_out),
        "/chat-server/presence-offline": _callback(
            "Presence: a dead node's user went offline (last-read mark, disconnect pushes)",
            {"type": "object", "required": ["userId"],
             "properties": {"userId": _ID_OR_TEXT, "location": {"type": ["string", "null"]}}}),
        **_demo_paths(),
    }


def _demo_paths() -> dict[str, Any]:
    only = " Exists only with `DEMO_ENABLED=on` (`make run`); 404 otherwise."
    session = {"type": "object", "required": ["token", "user", "users", "community", "textChannel",
                                              "voiceChannel", "rooms"],
               "properties": {"token": {"type": "string"}, "rooms": {"type": "array", "items": {
                   "type": "object", "required": ["room", "peer"], "properties": {"room": _ID, "peer": _ID}}}}}
    return {
        "/demo": {"get": _operation("The browser demo page." + only, {
            "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
            **_errors(404)}, tag="demo", security=PUBLIC)},
        "/demo/session": {"post": _operation(
            "Dev only: make the demo's memberships true and mint a token for a demo user." + only,
            {"200": _json(_envelope(session), "A token and the demo's rooms"), **_errors(400, 404, 503)},
            tag="demo", security=PUBLIC, requestBody={"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["userId"], "properties": {"userId": _ID}}}}})},
        "/demo/presence": {"post": _operation(
            "Dev only: each demo user's location or `offline`, from presence." + only,
            {"200": _json(_envelope({"type": "object", "additionalProperties": {"type": "string"}}), "Locations"),
             **_errors(400, 404, 503)},
            tag="demo", security=PUBLIC,
            requestBody={"required": True, "content": {JSON: {"schema": {"type": "array", "items": _ID}}}})},
    }


def chat_document() -> dict[str, Any]:
    """The chat server's OpenAPI document."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Smooth chat server HTTP API", "version": "1",
                 "description": "Every answer but downloads, bare arrays and health is the envelope "
                                "`{isSuccess, code, message, result}`; errors carry the HTTP status as `code`. "
                                "STOMP over WebSocket and SockJS at `/my-chat` is not HTTP API: see the README's "
                                "Protocol summary."},
        "paths": _chat_paths(),
        "components": {"schemas": _SCHEMAS, "securitySchemes": _SECURITY_SCHEMES},
    }


# -- the presence server ------------------------------------------------------------------------


def presence_document() -> dict[str, Any]:
    """The presence server's OpenAPI document (its errors carry codes of their own: 2000, 5030)."""
    failure = _json(_ref("Error"), "")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Smooth presence server HTTP API", "version": "1",
                 "description": "The line protocol on PRESENCE_TCP_PORT is not HTTP: see the README."},
        "paths": {
            "/presence-server/friends-state": {"post": _operation(
                "Each user's visible location, or `offline`",
                {"200": _json(_envelope({"type": "object", "additionalProperties": {"type": "string"}}), "Locations"),
                 "400": {**failure, "description": "Not a JSON array of at most 5,000 user ids (code 2000)"},
                 "503": {**failure, "description": "Redis is unavailable (code 5030)"}},
                tag="presence", security=PUBLIC,
                requestBody={"required": True, "content": {JSON: {"schema": _ref("IdList")}}})},
            "/presence-server/user-state": {"get": _operation(
                "Every online user (a bare map), for trusted services (the community server)",
                {"200": _json({"type": "object", "additionalProperties": {"const": "online"}}, "Online users"),
                 **_errors(401, 403),
                 "503": {**failure, "description": "Redis is unavailable (code 5030)"}},
                tag="presence", security=SERVICE_OR_BEARER)},
            "/healthz": {"get": _operation("Alive", {"200": _json(_ref("Health"), "Alive")},
                                           tag="health", security=PUBLIC)},
            "/readyz": {"get": _operation(
                "Ready: Redis answers",
                {"200": _json({"type": "object", "properties": {"status": {"const": "ready"}}}, "Ready"),
                 "503": _json({"type": "object", "properties": {"status": {"type": "string"}}}, "Redis unreachable")},
                tag="health", security=PUBLIC)},
            PRESENCE_PATH: {"get": _operation("This document", {"200": _json(_ref("OpenApi"), "OpenAPI 3.1")},
                                              tag="meta", security=PUBLIC)},
            "/metrics": _METRICS,
        },
        "components": {"schemas": {name: _SCHEMAS[name] for name in ("Success", "Error", "IdList", "Health",
                                                                     "OpenApi")},
                       "securitySchemes": _SERVICE_SCHEMES},
    }
