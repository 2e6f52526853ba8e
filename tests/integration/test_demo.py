"""The browser demo (``/demo``) end to end: two users chatting through it in headless Chromium.

A real presence process and a real gunicorn chat server with ``DEMO_ENABLED=on`` run on the
session's embedded Redis, broker and MongoDB-wire server (the ``stack_chat`` fixture: their own
Redis database and a fresh MongoDB database, so the demo's fixed ids meet nobody else's). tests/js/demo_e2e.js opens the
page as Ada and as Ben in two browser contexts and works it as people would: the community
channel, a dropped connection resumed with ``since-seq``, history paging, typing, send, reply,
edit, delete, a file sent and downloaded, unread counts, who is online and who is in voice.
The dev-only endpoint's own rules, and the demo being off by default, are checked over HTTP.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from app.auth import TokenVerifier
from app.settings import Settings
from tests.conftest import MS
from tests.support.chat import RunningChatServer, run_js_script

# Upper bounds of waits (scaled on slow machines), never speed assertions.
STEP_TIMEOUT_MS = 20_000 * MS * 1000
RUN_TIMEOUT_S = 240_000 * MS


def post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_two_users_chat_through_the_demo_in_chromium(stack_chat: RunningChatServer) -> None:
    result = run_js_script("demo_e2e.js", node_timeout_s=RUN_TIMEOUT_S, chatUrl=stack_chat.http_url, pageSize=5,
                           timeoutMs=STEP_TIMEOUT_MS)
    assert result.get("error") is None, result
    assert result["steps"] == ["online", "channel", "resume", "paging", "typing", "send", "reply", "edit", "delete",
                               "upload", "download", "unread", "voice"]
    # The reconnected page resubscribed to the channel from the last seq it had, and got what it missed.
    assert any(r["destination"] == "/topic/group/9101" and r["since"] >= 1 for r in result["resumes"]), result
    assert result["firstPage"] == ["m3", "m4", "m5", "m6", "m7"]
    assert result["afterOlder"] == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    assert result["downloaded"].endswith(f":{result['uploadedBytes']}")
    assert result["unread"] == 1
    assert result["pageErrors"] == [] and result["errorsShown"] == ""


def test_the_session_endpoint_mints_a_token_for_a_demo_user_only(stack_chat: RunningChatServer,
                                                                 stack_settings: Settings) -> None:
    status, body = post(stack_chat.http_url + "/demo/session", {"userId": 9003})
    assert status == 200
    assert TokenVerifier(stack_settings.jwt_secret).verify(body["result"]["token"]).user_id == 9003
    assert [room["peer"] for room in body["result"]["rooms"]] == [9001, 9002]
    assert post(stack_chat.http_url + "/demo/session", {"userId": 5})[0] == 400
    assert post(stack_chat.http_url + "/demo/presence", [9001, 5])[0] == 400
