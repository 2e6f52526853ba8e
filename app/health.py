"""Liveness, readiness and metrics endpoints of the chat server.

``/healthz`` answers 200 while the process serves HTTP. ``/readyz`` runs every check of
``ChatDomain.readiness`` at once, each bounded by a timeout, and answers 200 when all pass or
503 naming what is down, with the figures of ``ChatDomain.info`` (``outbox_backlog``: stored
events waiting for the broker) beside them. Check failures are logged; the body carries only
fixed words and numbers. ``/metrics`` is the Prometheus text format of every worker's
metrics (app/metrics.py), for trusted services only (:func:`metrics_response`).
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import gevent
from flask import Blueprint, Response, jsonify, request
from prometheus_client import CollectorRegistry

import app.metrics as metrics
from app.errors import ChatServerError
from app.service_auth import SERVICE_TOKEN_HEADER, CallerFacts, ServiceCallers

__all__ = ["health_blueprint", "metrics_response", "service_call_facts"]

log = logging.getLogger(__name__)

OK = "ok"
DOWN = "down"
TIMEOUT = "timeout"


def health_blueprint(readiness: Mapping[str, Callable[[], None]], info: Mapping[str, Callable[[], object]], *,
                     timeout_s: float, metrics_callers: ServiceCallers) -> Blueprint:
    """``/healthz`` and ``/readyz`` over ``readiness`` (dependency name -> check that raises) and
    ``info``; ``/metrics`` for ``metrics_callers``."""
    blueprint = Blueprint("health", __name__)

    @blueprint.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @blueprint.get("/readyz")
    def readyz() -> tuple[Response, int]:
        results = run_checks(readiness, timeout_s=timeout_s)
        figures = {name: figure() for name, figure in info.items()}
        down = sorted(name for name, result in results.items() if result != OK)
        if down:
            return jsonify(status="unavailable", checks=results, down=down, **figures), 503
        return jsonify(status="ready", checks=results, **figures), 200

    @blueprint.get("/metrics")
    def prometheus_metrics() -> Response:
        return metrics_response(metrics.CHAT_REGISTRY, metrics_callers)

    return blueprint


def metrics_response(registry: CollectorRegistry, callers: ServiceCallers) -> Response:
    """``/metrics``: the Prometheus text format of a server's ``registry`` (app/metrics.py; the
    presence server's HTTP API serves its own), to trusted services only.

    Why not open: the chat server's port is the one its clients reach, and its figures are
    nobody else's business. A scraper shows the service token as ``X-Service-Token`` or, as
    Prometheus's ``authorization`` setting sends it, ``Authorization: Bearer``; with no service
    token configured it must call from ``SERVICE_ALLOWED_NETWORKS``. Raises ``AuthError`` or
    ``Forbidden`` (401 or 403 in the JSON envelope).
    """
    callers.check(service_call_facts())
    body, content_type = metrics.exposition(registry)
    return Response(body, mimetype=None, content_type=content_type)


def service_call_facts() -> CallerFacts:
    """The current request's :class:`CallerFacts`, for endpoints only services call (``/metrics``,
    presence's ``user-state``): a bearer credential is a service token offered (a scraper has no
    user token to show)."""
    bearer = request.headers.get("Authorization", "")
    offered = request.headers.get(SERVICE_TOKEN_HEADER)
    if offered is None and bearer[:7].lower() == "bearer ":
        offered = bearer[7:].strip()
    return CallerFacts(sent_token=offered, has_user_token=False, remote_addr=request.remote_addr)


def run_checks(readiness: Mapping[str, Callable[[], None]], *, timeout_s: float) -> dict[str, str]:
    """Run every check concurrently; each result is ``ok``, ``down`` or ``timeout``."""
    greenlets = {name: gevent.spawn(_run_check, name, check, timeout_s) for name, check in readiness.items()}
    gevent.joinall(list(greenlets.values()))
    return {name: greenlet.value or DOWN for name, greenlet in greenlets.items()}


def _run_check(name: str, check: Callable[[], None], timeout_s: float) -> str:
    try:
        with gevent.Timeout(timeout_s):
            check()
    except gevent.Timeout:
        log.warning("readiness check %s timed out after %ss", name, timeout_s)
        return TIMEOUT
    except ChatServerError as exc:  # an expected state (down, still joining): one line
        log.warning("readiness check %s: %s", name, exc.message)
        return DOWN
    except Exception:
        log.warning("readiness check %s failed", name, exc_info=True)
        return DOWN
    return OK
