"""/healthz, /readyz and the JSON error bodies of the chat server's HTTP side."""

import json
import urllib.error
import urllib.request

import gevent
from flask import Blueprint, request

from app.contracts import ChatDomain
from app.errors import Forbidden
from app.settings import Settings
from tests.support.chat import RecordingApplication, in_process_chat_server


def fetch(url, method="GET", data=None):
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def broken():
    raise ConnectionError("mongo at 10.0.0.1:27017 refused")


def hanging():
    gevent.sleep(30)


def serve(readiness, blueprints=(), **overrides):
    settings = Settings.from_env({}, service_timeout_s=0.2, **overrides)
    services = ChatDomain(application=RecordingApplication(), readiness=readiness, blueprints=list(blueprints))
    return in_process_chat_server(settings, services)


def test_healthz():
    with serve({}) as server:
        assert fetch(server.http_url + "/healthz") == (200, {"status": "ok"})


def test_readyz_when_every_check_passes():
    with serve({"mongo": lambda: None, "redis": lambda: None}) as server:
        assert fetch(server.http_url + "/readyz") == (200, {"status": "ready", "checks": {"mongo": "ok", "redis": "ok"}})


def test_readyz_names_what_is_down_without_details():
    with serve({"mongo": broken, "kafka": hanging, "redis": lambda: None}) as server:
        status, body = fetch(server.http_url + "/readyz")
    assert status == 503
    assert body == {"status": "unavailable", "checks": {"mongo": "down", "kafka": "timeout", "redis": "ok"},
                    "down": ["kafka", "mongo"]}
    assert "10.0.0.1" not in json.dumps(body)


def test_json_error_bodies():
    api = Blueprint("api", __name__)
    api.add_url_rule("/forbidden", "forbidden", lambda: (_ for _ in ()).throw(Forbidden("not a member")))
    api.add_url_rule("/boom", "boom", lambda: 1 / 0)
    api.add_url_rule("/upload", "upload", lambda: {"size": len(request.get_data())}, methods=["POST"])
    with serve({}, [api], upload_max_bytes=10) as server:
        base = server.http_url
        assert fetch(base + "/nothing") == (404, {"isSuccess": False, "code": 404, "message": "not found"})
        assert fetch(base + "/healthz", method="POST") == (
            405, {"isSuccess": False, "code": 405, "message": "method not allowed"})
        assert fetch(base + "/forbidden") == (403, {"isSuccess": False, "code": 403, "message": "not a member"})
        assert fetch(base + "/boom") == (500, {"isSuccess": False, "code": 500, "message": "internal error"})
        too_big = b"x" * (10 + (1 << 20) + 1)  # over upload_max_bytes plus the form overhead
        assert fetch(base + "/upload", method="POST", data=too_big) == (
            413, {"isSuccess": False, "code": 413, "message": "payload too large"})
        assert fetch(base + "/upload", method="POST", data=b"small") == (200, {"size": 5})
