"""Real answers of the chat and presence servers, checked against their OpenAPI documents.

Both servers run as `make run` starts them (the ``stack_chat`` fixture: gunicorn with the demo
on, a presence process, generated service tokens). Every case below is one real request; its
status must be described by the operation and its body must match the described schema
(``jsonschema``, draft 2020-12, which OpenAPI 3.1 schemas are), success and error envelopes
alike. The documents are read from the servers themselves (``/chat-server/openapi.json``,
``/presence-server/openapi.json``). Static checks: every operation has a success case and,
where the route can refuse anything, an error case; every route of the chat server's Flask
app is described, and nothing else is.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from jsonschema import Draft202012Validator

from app.auth import mint_token
from app.composition import build_chat_server
from app.openapi import CHAT_PATH, PRESENCE_PATH, chat_document, presence_document
from app.settings import Settings
from tests.support.chat import RunningChatServer
from tests.support.presence import fresh_user_ids

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63f8cf00000301010018dd8db00000000049454e44ae426082")
# Routes that are not HTTP API: the SockJS transports (the SockJS protocol), the client scripts
# and the demo page's own script and style.
NOT_API_PREFIXES = ("/my-chat", "/static/", "/demo/demo.")


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class World:
    """A node to ask, and fresh users, rooms and a stored file to ask about."""

    chat: str
    presence: str
    service: str
    secret: str
    five: int
    nine: int
    stranger: int
    room: int
    community: int
    channel: int
    file_key: str

    def token(self, user: int) -> str:
        return mint_token(self.secret, user)


def call(url: str, method: str = "GET", *, body: Any = None, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> Answer:
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return Answer(response.status, response.headers.get("Content-Type", ""), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers.get("Content-Type", ""), error.read())


def multipart(fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for name, (filename, content_type, content) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(w: World, path: str, user: int | None, fields: dict[str, str], content_type: str = "image/png") -> Answer:
    data, form_type = multipart(fields, {"image": ("dot.png", content_type, PNG)})
    headers = {"Content-Type": form_type, **({"Authorization": w.token(user)} if user else {})}
    return call(w.chat + path, "POST", data=data, headers=headers)


def as_user(w: World, user: int) -> dict[str, str]:
    return {"Authorization": "Bearer " + w.token(user)}


def as_service(w: World) -> dict[str, str]:
    return {"X-Service-Token": w.service}


@pytest.fixture(scope="module")
def world(stack_chat: RunningChatServer, stack_settings: Settings) -> World:
    five, nine, stranger, room, community, channel = fresh_user_ids(6)
    service = {"X-Service-Token": stack_settings.service_token}
    chat = stack_chat.http_url
    for path, ids in ((f"room-user-list/{room}", [five, nine]), (f"community-user-list/{community}", [five, nine]),
                      (f"community-channel-list/{community}", [channel])):
        assert call(f"{chat}/chat-server/{path}", "PUT", body=ids, headers=service).status == 200
    partial = World(chat, f"http://127.0.0.1:{stack_settings.presence_http_port}", stack_settings.service_token,
                    stack_settings.jwt_secret, five, nine, stranger, room, community, channel, "")
    stored = upload(partial, "/chat-server/file", five, {"channelId": str(room), "fileType": "image"})
    assert stored.status == 200, stored
    key = json.loads(stored.body)["result"]["url"].rsplit("/", 1)[-1]
    return World(**{**partial.__dict__, "file_key": key})


# (server, method, path template, what to send, the status it must get)
Case = tuple[str, str, str, Callable[[World], Answer], int]
CHAT, PRESENCE = "chat", "presence"


def _chat(method: str, template: str, status: int, send: Callable[[World], Answer]) -> Case:
    return (CHAT, method, template, send, status)


CASES: list[Case] = [
    _chat("GET", "/healthz", 200, lambda w: call(w.chat + "/healthz")),
    _chat("GET", "/readyz", 200, lambda w: call(w.chat + "/readyz")),
    _chat("GET", CHAT_PATH, 200, lambda w: call(w.chat + CHAT_PATH)),
    _chat("GET", "/metrics", 200, lambda w: call(w.chat + "/metrics", headers=as_service(w))),
    _chat("GET", "/metrics", 401, lambda w: call(w.chat + "/metrics")),
    _chat("GET", "/metrics", 401, lambda w: call(w.chat + "/metrics", headers=as_user(w, w.five))),
    # history
    _chat("GET", "/chat-server/direct", 200,
          lambda w: call(f"{w.chat}/chat-server/direct?ch_id={w.room}", headers=as_user(w, w.five))),
    _chat("GET", "/chat-server/direct", 200,
          lambda w: call(f"{w.chat}/chat-server/direct?ch_id={w.room}&after_seq=0", headers=as_user(w, w.nine))),
    _chat("GET", "/chat-server/direct", 400,
          lambda w: call(f"{w.chat}/chat-server/direct?ch_id={w.room}&after_seq=999999", headers=as_user(w, w.five))),
    _chat("GET", "/chat-server/direct", 400,
          lambda w: call(f"{w.chat}/chat-server/direct?ch_id={w.room}&size=100000", headers=as_user(w, w.five))),
    _chat("GET", "/chat-server/direct", 401, lambda w: call(f"{w.chat}/chat-server/direct?ch_id={w.room}")),
    _chat("GET", "/chat-server/direct", 403,
          lambda w: call(f"{w.chat}/chat-server/direct?ch_id={w.room}", headers=as_user(w, w.stranger))),
    _chat("GET", "/chat-server/community", 200,
          lambda w: call(f"{w.chat}/chat-server/community?ch_id={w.channel}", headers=as_user(w, w.five))),
    _chat("GET", "/chat-server/community", 403,
          lambda w: call(f"{w.chat}/chat-server/community?ch_id={w.channel}", headers=as_user(w, w.stranger))),
    # files
    _chat("POST", "/chat-server/file", 200,
          lambda w: upload(w, "/chat-server/file", w.nine, {"channelId": str(w.room), "fileType": "image"})),
    _chat("POST", "/chat-server/file", 400,
          lambda w: upload(w, "/chat-server/file", w.nine, {"channelId": str(w.room)})),
    _chat("POST", "/chat-server/file", 415,
          lambda w: upload(w, "/chat-server/file", w.nine, {"channelId": str(w.room), "fileType": "x"}, "text/html")),
    _chat("POST", "/chat-server/channel/file", 200,
          lambda w: upload(w, "/chat-server/channel/file", w.five,
                           {"channelId": str(w.channel), "communityId": str(w.community), "fileType": "image"})),
    _chat("POST", "/chat-server/channel/file", 401,
          lambda w: upload(w, "/chat-server/channel/file", None,
                           {"channelId": str(w.channel), "communityId": str(w.community), "fileType": "image"})),
    _chat("GET", "/chat-server/file/{key}", 200,
          lambda w: call(f"{w.chat}/chat-server/file/{w.file_key}", headers=as_user(w, w.nine))),
    _chat("GET", "/chat-server/file/{key}", 403,
          lambda w: call(f"{w.chat}/chat-server/file/{w.file_key}", headers=as_user(w, w.stranger))),
    _chat("GET", "/chat-server/file/{key}", 404,
          lambda w: call(f"{w.chat}/chat-server/file/{'0' * 32}", headers=as_user(w, w.nine))),
    # unread counts
    _chat("POST", "/chat-server/message-count", 200,
          lambda w: call(w.chat + "/chat-server/message-count", "POST", body={"roomIds": [w.room]},
                         headers=as_user(w, w.nine))),
    _chat("POST", "/chat-server/message-count", 400,
          lambda w: call(w.chat + "/chat-server/message-count", "POST", body={"roomIds": "all"},
                         headers=as_user(w, w.nine))),
    _chat("POST", "/chat-server/message-count", 403,
          lambda w: call(w.chat + "/chat-server/message-count", "POST", body={"roomIds": [w.room]},
                         headers=as_user(w, w.stranger))),
    # service endpoints: membership
    *[_chat("PUT", f"/chat-server/{name}/{{ident}}", status, send) for name, ident in
      (("room-user-list", "room"), ("community-user-list", "community"), ("community-channel-list", "channel_or_c"))
      for status, send in (
          (200, lambda w, n=name, i=ident: call(f"{w.chat}/chat-server/{n}/{_ident(w, i)}", "PUT",
                                                body=_members(w, i), headers=as_service(w))),
          (400, lambda w, n=name, i=ident: call(f"{w.chat}/chat-server/{n}/{_ident(w, i)}", "PUT",
                                                body={"ids": 1}, headers=as_service(w))),
          (401, lambda w, n=name, i=ident: call(f"{w.chat}/chat-server/{n}/{_ident(w, i)}", "PUT", body=[1])),
          (403, lambda w, n=name, i=ident: call(f"{w.chat}/chat-server/{n}/{_ident(w, i)}", "PUT", body=[1],
                                                headers=as_user(w, w.five))))],
    # service endpoints: presence callbacks
    _chat("POST", "/chat-server/signaling-list-community", 200,
          lambda w: call(w.chat + "/chat-server/signaling-list-community", "POST", headers=as_service(w),
                         body={"type": "out", "communityId": str(w.community), "channelId": "c-77", "ids": []})),
    _chat("POST", "/chat-server/signaling-list-community", 400,
          lambda w: call(w.chat + "/chat-server/signaling-list-community", "POST", headers=as_service(w),
                         body={"communityId": str(w.community), "channelId": "r-77"})),
    _chat("POST", "/chat-server/signaling-list-direct", 200,
          lambda w: call(w.chat + "/chat-server/signaling-list-direct", "POST", headers=as_service(w),
                         body={"type": "out", "channelId": str(w.room), "ids": []})),
    _chat("POST", "/chat-server/signaling-list-direct", 401,
          lambda w: call(w.chat + "/chat-server/signaling-list-direct", "POST", body={"channelId": str(w.room)})),
    _chat("POST", "/chat-server/presence-offline", 200,
          lambda w: call(w.chat + "/chat-server/presence-offline", "POST", headers=as_service(w),
                         body={"userId": w.stranger, "location": "home"})),
    _chat("POST", "/chat-server/presence-offline", 400,
          lambda w: call(w.chat + "/chat-server/presence-offline", "POST", headers=as_service(w),
                         body={"userId": "nobody"})),
    # the demo (on in this stack)
    _chat("GET", "/demo", 200, lambda w: call(w.chat + "/demo")),
    _chat("POST", "/demo/session", 200, lambda w: call(w.chat + "/demo/session", "POST", body={"userId": 9003})),
    _chat("POST", "/demo/session", 400, lambda w: call(w.chat + "/demo/session", "POST", body={"userId": 1})),
    _chat("POST", "/demo/presence", 200, lambda w: call(w.chat + "/demo/presence", "POST", body=[9001, 9003])),
    _chat("POST", "/demo/presence", 400, lambda w: call(w.chat + "/demo/presence", "POST", body={})),
    # presence
    (PRESENCE, "POST", "/presence-server/friends-state",
     lambda w: call(w.presence + "/presence-server/friends-state", "POST", body=[w.five, str(w.nine)]), 200),
    (PRESENCE, "POST", "/presence-server/friends-state",
     lambda w: call(w.presence + "/presence-server/friends-state", "POST", body=["x"]), 400),
    (PRESENCE, "GET", "/presence-server/user-state",
     lambda w: call(w.presence + "/presence-server/user-state", headers=as_service(w)), 200),
    (PRESENCE, "GET", "/presence-server/user-state", lambda w: call(w.presence + "/presence-server/user-state"), 401),
    (PRESENCE, "GET", "/healthz", lambda w: call(w.presence + "/healthz"), 200),
    (PRESENCE, "GET", "/readyz", lambda w: call(w.presence + "/readyz"), 200),
    (PRESENCE, "GET", PRESENCE_PATH, lambda w: call(w.presence + PRESENCE_PATH), 200),
    (PRESENCE, "GET", "/metrics",
     lambda w: call(w.presence + "/metrics", headers={"Authorization": "Bearer " + w.service}), 200),
    (PRESENCE, "GET", "/metrics", lambda w: call(w.presence + "/metrics"), 401),
]
# Operations whose refusals cannot be provoked on a healthy node, or that refuse nothing.
NO_ERROR_CASE = {
    (CHAT, "GET", "/healthz"), (CHAT, "GET", "/readyz"), (CHAT, "GET", CHAT_PATH),
    (CHAT, "GET", "/demo"),  # 404 only with the demo off: tests/unit/test_demo_routes.py
    (PRESENCE, "GET", "/healthz"), (PRESENCE, "GET", "/readyz"),
    (PRESENCE, "GET", PRESENCE_PATH),
}


def _ident(w: World, which: str) -> int:
    return w.room if which == "room" else w.community


def _members(w: World, which: str) -> list[int]:
    return [w.channel] if which == "channel_or_c" else [w.five, w.nine]


@pytest.fixture(scope="module")
def documents(world: World) -> Iterator[dict[str, dict[str, Any]]]:
    chat = call(world.chat + CHAT_PATH)
    presence = call(world.presence + PRESENCE_PATH)
    yield {CHAT: json.loads(chat.body), PRESENCE: json.loads(presence.body)}


def check_answer(document: dict[str, Any], method: str, template: str, answer: Answer) -> None:
    """``answer`` is described by the operation: its status, content type and body schema."""
    operation = document["paths"][template][method.lower()]
    described = operation["responses"].get(str(answer.status))
    assert described is not None, f"{method} {template}: {answer.status} is not described; body {answer.body[:300]!r}"
    content = described.get("content")
    if not content:
        assert answer.body == b"", f"{method} {template}: described without a body"
        return
    media = answer.content_type.split(";")[0].strip()
    key = media if media in content else "*/*"
    assert key in content, f"{method} {template}: content type {media} is not described"
    if key != JSON_TYPE:
        return
    schema = {**content[key]["schema"], "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(json.loads(answer.body)), key=str)
    assert not errors, f"{method} {template} {answer.status}: {[e.message for e in errors][:5]}"


JSON_TYPE = "application/json"


@pytest.mark.parametrize("server, method, template, send, status", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[4]}" for c in CASES])
def test_a_real_answer_matches_the_document(documents, world: World, server: str, method: str, template: str,
                                            send: Callable[[World], Answer], status: int) -> None:
    answer = send(world)
    assert answer.status == status, (answer.status, answer.body[:300])
    check_answer(documents[server], method, template, answer)


def test_the_served_documents_are_the_ones_in_the_code(documents) -> None:
    assert documents[CHAT] == json.loads(json.dumps(chat_document()))
    assert documents[PRESENCE] == json.loads(json.dumps(presence_document()))


@pytest.mark.parametrize("server, document", [(CHAT, chat_document()), (PRESENCE, presence_document())])
def test_every_operation_has_a_success_case_and_an_error_case(server: str, document: dict[str, Any]) -> None:
    for template, operations in document["paths"].items():
        for method in operations:
            statuses = {c[4] for c in CASES if (c[0], c[1], c[2]) == (server, method.upper(), template)}
            assert any(s < 300 for s in statuses), f"{method} {template}: no success case"
            if (server, method.upper(), template) not in NO_ERROR_CASE:
                assert any(s >= 400 for s in statuses), f"{method} {template}: no error case"


@pytest.mark.parametrize("document", [chat_document(), presence_document()])
def test_every_schema_of_the_documents_is_a_valid_json_schema(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                for media in response.get("content", {}).values():
                    Draft202012Validator.check_schema(media["schema"])


def test_every_route_of_the_chat_server_is_described(stack_settings: Settings) -> None:
    app = build_chat_server(stack_settings).flask_app
    routes = {(rule.rule.replace("<", "{").replace(">", "}").replace("{path:", "{"), method)
              for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}
              if not rule.rule.startswith(NOT_API_PREFIXES)}
    described = {(template, method.upper()) for template, ops in chat_document()["paths"].items() for method in ops}
    assert routes == described
