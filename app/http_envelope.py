"""The one JSON envelope of every HTTP answer (protocol.md §6.1), and the error handlers that use it.

Success is ``{"isSuccess":true,"code":1000,"message":"요청에 성공하였습니다.","result":…}`` (keys in
that order, ``result`` only when there is one). An error is
``{"isSuccess":false,"code":<HTTP status>,"message":"<short fixed text>"}`` with that 4xx/5xx status.
Every Flask app of Smooth registers :func:`register_error_handlers`, so a 413, a 405 or a crash
reads the same on every route.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from app.errors import ChatServerError

__all__ = [
    "SUCCESS_CODE",
    "SUCCESS_MESSAGE",
    "HTTP_MESSAGES",
    "json_response",
    "success",
    "error_response",
    "error_body",
    "register_error_handlers",
]

log = logging.getLogger(__name__)

SUCCESS_CODE: Final = 1000
SUCCESS_MESSAGE: Final = "요청에 성공하였습니다."
# The short fixed text of each status; Werkzeug's own texts are long sentences.
HTTP_MESSAGES: Final = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "payload too large",
    429: "too many requests",
    500: "internal error",
    503: "service unavailable",
}
_NO_RESULT = object()


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` serialised once, keys in insertion order, UTF-8."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(text, status=status, mimetype="application/json")


def success(result: Any = _NO_RESULT) -> Response:
    """The §6.1 success envelope, with ``result`` when one is given."""
    body: dict[str, Any] = {"isSuccess": True, "code": SUCCESS_CODE, "message": SUCCESS_MESSAGE}
    if result is not _NO_RESULT:
        body["result"] = result
    return json_response(body)


def error_response(status: int, message: str | None = None) -> Response:
    """The error envelope for ``status``; ``message`` defaults to the status's fixed text."""
    return Response(error_body(status, message), status=status, mimetype="application/json")


def error_body(status: int, message: str | None = None) -> bytes:
    """The error envelope's bytes, for answers written below Flask (the WebSocket handler)."""
    text = message if message is not None else HTTP_MESSAGES.get(status, "error")
    body = {"isSuccess": False, "code": status, "message": text}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def register_error_handlers(app: Flask) -> None:
    """Answer every error ``app`` raises (ours, Werkzeug's, a crash) with the envelope."""
    app.register_error_handler(ChatServerError, _chat_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def _chat_error(exc: ChatServerError) -> Response:
    if exc.http_status >= 500:
        log.warning("HTTP %s %s failed: %s", request.method, request.path, type(exc).__name__)
    return error_response(exc.http_status, exc.message)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(status, HTTP_MESSAGES.get(status, (exc.name or "error").lower()))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected_error(exc: Exception) -> Response:
    log.exception("HTTP %s %s crashed", request.method, request.path)
    return error_response(500)
