"""Who may read ``/metrics`` (app/health.py ``metrics_response``) and presence's ``user-state``: trusted
services only, by the same rule as the service endpoints (app/service_auth.py). A scraper
shows the service token as ``X-Service-Token`` or as Prometheus's ``authorization`` setting
sends it (``Authorization: Bearer``); without a configured token, only allowed networks."""

from __future__ import annotations

import pytest
from flask import Flask

from app.health import health_blueprint
from app.http_envelope import register_error_handlers
from app.service_auth import ServiceCallers, parse_networks
from app.tcp_presence.http import create_presence_http_app
from tests.support.presence import MemoryPresenceStore

TOKEN = "s3cret-service-token"
LOOPBACK = parse_networks("127.0.0.0/8, ::1/128")
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}


def chat_app(callers: ServiceCallers) -> Flask:
    app = Flask("chat-metrics-test")
    app.register_blueprint(health_blueprint({}, {}, timeout_s=1.0, metrics_callers=callers))
    register_error_handlers(app)
    return app


def presence_app(callers: ServiceCallers) -> Flask:
    return create_presence_http_app(MemoryPresenceStore(), services=callers)


SERVERS = pytest.mark.parametrize("make_app", [chat_app, presence_app], ids=["chat", "presence"])


def status(app: Flask, headers: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> int:
    return app.test_client().get("/metrics", headers=headers or {}, environ_base=environ or {}).status_code


@SERVERS
def test_with_a_service_token_a_scraper_must_show_it_from_anywhere(make_app):
    app = make_app(ServiceCallers(TOKEN, LOOPBACK))
    assert status(app) == 401  # loopback is not enough once a token is configured
    assert status(app, {"X-Service-Token": TOKEN}, OUTSIDE) == 200
    assert status(app, {"Authorization": f"Bearer {TOKEN}"}, OUTSIDE) == 200
    assert status(app, {"Authorization": "Bearer not-the-token"}) == 401
    assert status(app, {"X-Service-Token": "not-the-token"}) == 401


@SERVERS
def test_without_a_service_token_only_the_allowed_networks_may_scrape(make_app):
    app = make_app(ServiceCallers("", LOOPBACK))
    assert status(app) == 200
    assert status(app, environ=OUTSIDE) == 403
    assert status(app, {"Authorization": "Bearer anything"}, OUTSIDE) == 403


@SERVERS
def test_a_refusal_is_the_json_envelope_and_shows_no_metric(make_app):
    response = make_app(ServiceCallers(TOKEN, LOOPBACK)).test_client().get("/metrics")
    assert response.status_code == 401 and response.is_json
    assert response.get_json()["isSuccess"] is False and b"smooth_" not in response.get_data()


@SERVERS
def test_health_stays_open_for_load_balancers(make_app):
    client = make_app(ServiceCallers(TOKEN, LOOPBACK)).test_client()
    assert client.get("/healthz", environ_base=OUTSIDE).status_code == 200


def test_the_list_of_every_online_user_is_for_trusted_services_too():
    """``user-state`` is the community server's resync (protocol.md §6.3), not anyone's to read."""
    app = presence_app(ServiceCallers(TOKEN, LOOPBACK))
    assert app.test_client().get("/presence-server/user-state").status_code == 401
    answer = app.test_client().get("/presence-server/user-state", headers={"X-Service-Token": TOKEN})
    assert answer.status_code == 200 and answer.get_json() == {}
    outside = presence_app(ServiceCallers("", LOOPBACK)).test_client()
    assert outside.get("/presence-server/user-state", environ_base=OUTSIDE).status_code == 403
