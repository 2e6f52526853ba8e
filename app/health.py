"""Liveness, readiness and metrics endpoints of the chat server.

``/healthz`` answers 200 while the process serves HTTP. ``/readyz`` runs every check of
``ChatDomain.readiness`` at once, each bounded by a timeout, and answers 200 when all pass or
503 naming what is down, with the figures of ``ChatDomain.info`` (``outbox_backlog``: stored
events waiting for the broker) beside them. Check failures are logged; the body carries only
fixed words and numbers. ``/metrics`` is the Prometheus text format of every worker's
metrics (app/metrics.py).
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import gevent
from flask import Blueprint, Response, jsonify
from prometheus_client import CollectorRegistry

import app.metrics as metrics
from app.errors import ChatServerError

__all__ = ["health_blueprint", "metrics_response"]

log = logging.getLogger(__name__)

OK = "ok"
DOWN = "down"
TIMEOUT = "timeout"


def health_blueprint(readiness: Mapping[str, Callable[[], None]], info: Mapping[str, Callable[[], object]], *,
                     timeout_s: float) -> Blueprint:
    """``/healthz`` and ``/readyz`` over ``readiness`` (dependency name -> check that raises) and ``info``."""
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
        return metrics_response(metrics.CHAT_REGISTRY)

    return blueprint


def metrics_response(registry: CollectorRegistry) -> Response:
    """``/metrics``: the Prometheus text format of a server's ``registry`` (app/metrics.py; the
    presence server's HTTP API serves its own)."""
    body, content_type = metrics.exposition(registry)
    return Response(body, mimetype=None, content_type=content_type)


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
