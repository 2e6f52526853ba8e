"""The demo exists only when enabled: ``/demo`` and its dev-only endpoints are 404 by default.

The chat server's Flask app is built from the composition root with backends that are not
there: building opens no connection, and the page needs none.
"""

import pytest

from app.composition import build_chat_server
from app.settings import Settings

NOWHERE = dict(mongo_url="mongodb://127.0.0.1:1/", redis_url="redis://127.0.0.1:1/0",
               kafka_bootstrap_servers="127.0.0.1:1")
DEMO_PATHS = ["/demo", "/demo/demo.js", "/demo/demo.css", "/static/stomp.umd.min.js"]


def client(**overrides):
    return build_chat_server(Settings.from_env({}, **NOWHERE, **overrides)).flask_app.test_client()


def test_the_demo_is_off_unless_enabled():
    assert Settings().demo_enabled == "off"
    off = client()
    for path in DEMO_PATHS:
        assert off.get(path).status_code == 404, path
    answer = off.post("/demo/session", json={"userId": 9001})
    assert answer.status_code == 404 and answer.get_json()["isSuccess"] is False
    assert off.post("/demo/presence", json=[9001]).status_code == 404


@pytest.mark.parametrize("path", DEMO_PATHS)
def test_the_enabled_demo_serves_its_page_and_the_local_client_copies(path):
    assert client(demo_enabled="on").get(path).status_code == 200


def test_the_page_loads_the_servers_own_client_copies_and_lists_the_demo_users():
    page = client(demo_enabled="on").get("/demo").get_data(as_text=True)
    assert '<script src="/static/sockjs.min.js?v=' in page
    assert '<script src="/static/stomp.umd.min.js?v=' in page
    assert "http" not in page.split("<body>")[0]  # nothing from another host
    assert '<option value="9001">Ada</option>' in page


def test_the_session_endpoint_refuses_users_outside_the_demo():
    answer = client(demo_enabled="on").post("/demo/session", json={"userId": 5})
    assert answer.status_code == 400
