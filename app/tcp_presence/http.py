"""The presence server's small HTTP API (protocol.md §6.3), served on PRESENCE_HTTP_PORT.

Owns :func:`create_presence_http_app`:

- ``POST /presence-server/friends-state``: body = JSON array of user ids (strings or
  numbers); answer = the common wrapper with ``result`` = ``{"<id>": "<location>" |
  "offline"}`` (the user's visible location, §7.5).
- ``GET /presence-server/user-state``: bare ``{"<id>": "online", ...}`` of every online
  user, read from the ``online`` index (no key scan, W-23); for trusted services only (the
  community server resyncs from it), by the rule of ``/metrics``.
- ``GET /healthz`` (the process runs) and ``GET /readyz`` (Redis answers).
- ``GET /presence-server/openapi.json``: the OpenAPI description of the above (app/openapi.py).

Every error, a 404, a 405, a body that is not JSON (``malformed JSON``) or too big, a
crash, is answered in the chat server's JSON envelope (app/http_envelope.py).
- ``GET /metrics``: the Prometheus text format (app/metrics.py), to trusted services only
  (``app.health.metrics_response``); the two endpoints above are counted in
  ``smooth_presence_requests_total`` (protocol ``http``).

The original's debug endpoints (``/all-redis-info``, ``/delete``, ``/for-me``) dumped or
wiped Redis without authentication (W-10); they deliberately do not exist here.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from flask import Flask, Response, jsonify, request

import app.metrics as metrics
from app import json_input
from app.destinations import parse_id
from app.health import metrics_response, service_call_facts
from app.errors import BackendError
from app.http_envelope import error_response, json_response, register_error_handlers, register_request_ids, success
from app.openapi import PRESENCE_PATH, presence_document
from app.service_auth import ServiceCallers

from .store import PresenceStore

__all__ = ["create_presence_http_app", "FRIENDS_STATE_MAX_IDS", "MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

# One friends-state request looks up at most this many users.
FRIENDS_STATE_MAX_IDS: Final = 5000
# The largest request body: FRIENDS_STATE_MAX_IDS quoted ids with separators, and room to spare.
MAX_BODY_BYTES: Final = 128 * 1024


# The endpoints counted in the presence request metrics (view name -> their ``type`` label).
_MEASURED_ENDPOINTS: Final = {"friends_state": "friends-state", "user_state": "user-state"}


def create_presence_http_app(store: PresenceStore, *, services: ServiceCallers) -> Flask:
    """The Flask app; ``store`` is the same one the TCP handler uses; ``/metrics`` and
    ``user-state`` answer ``services`` (trusted services) only."""
    app = Flask("smooth-presence")
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post("/presence-server/friends-state")
    def friends_state() -> tuple[Response, int]:
        try:
            body = json_input.loads(request.get_data(cache=False))
        except json_input.MalformedJSON:
            return error_response(400, f"body: {json_input.MALFORMED_JSON}"), 400
        user_ids = _user_ids(body)
        if user_ids is None:
            return error_response(400, "user ids must be a JSON array of digits"), 400
        states = store.friends_state(user_ids)
        result = {str(user): states.get(user) or "offline" for user in user_ids}
        return success(result), 200

    @app.get("/presence-server/user-state")
    def user_state() -> tuple[Response, int]:
        services.check(service_call_facts())  # every online user: the community server's, no one else's
        return jsonify({str(user): "online" for user in store.online_users()}), 200

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return metrics_response(metrics.PRESENCE_REGISTRY, services)

    @app.after_request
    def count_request(response: Response) -> Response:
        kind = _MEASURED_ENDPOINTS.get(request.endpoint or "")
        if kind is not None:
            metrics.presence_request("http", kind, metrics.http_outcome(response.status_code))
        return response

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        if store.ping():
            return jsonify({"status": "ready"}), 200
        return jsonify({"status": "redis unreachable"}), 503

    register_error_handlers(app)
    document = presence_document()
    app.add_url_rule(PRESENCE_PATH, "openapi", lambda: json_response(document), methods=["GET"])

    @app.errorhandler(BackendError)
    def backend_down(_: BackendError) -> tuple[Response, int]:
        return error_response(503, "presence store unavailable"), 503

    register_request_ids(app)
    return app


def _user_ids(body: Any) -> list[int] | None:
    """The ids of a friends-state body, or None when it is not a list of user ids."""
    if not isinstance(body, list) or len(body) > FRIENDS_STATE_MAX_IDS:
        return None
    ids: list[int] = []
    for item in body:
        ident = None if isinstance(item, bool) or not isinstance(item, (int, str)) else parse_id(str(item))
        if ident is None:
            return None
        ids.append(ident)
    return ids
