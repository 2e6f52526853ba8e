"""The one JSON envelope of every HTTP answer (protocol.md §6.1), and the error handlers that use it.

Success is ``{"isSuccess":true,"code":1000,"message":"요청에 성공하였습니다.","result":…}`` (keys in
that order, ``result`` only when there is one). An error is
``{"isSuccess":false,"code":<HTTP status>,"message":"<short fixed text>"}`` with that 4xx/5xx status.
Every Flask app of Smooth registers :func:`register_error_handlers`, so a 413, a 405 or a crash
reads the same on every route, and :func:`register_request_ids`, so every request has an id
(the caller's ``X-Request-Id`` if it sends a sane one, else a new one) that its log lines carry
(app/logs.py ``log_context``) and its answer echoes.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any, Final

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from app.errors import ChatServerError, RequestTimeout
from app.logs import log_context

__all__ = [
    "SUCCESS_CODE",
    "SUCCESS_MESSAGE",
    "HTTP_MESSAGES",
    "json_response",
    "success",
    "error_response",
    "error_body",
    "register_error_handlers",
    "register_request_ids",
    "REQUEST_ID_HEADER",
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
REQUEST_ID_HEADER: Final = "X-Request-Id"
# A caller's request id is kept only if it is this short and plain (it goes into every log line).
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def register_request_ids(app: Flask) -> None:
    """Give every request of ``app`` an id: in its log lines, and echoed in ``X-Request-Id``."""

    @app.before_request
    def bind_request_id() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _SANE_REQUEST_ID.fullmatch(offered) else secrets.token_hex(8)
        request.environ["smooth.request_id"] = request_id
        log_context(request=request_id)

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        request_id = request.environ.get("smooth.request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response


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
    response = error_response(exc.http_status, exc.message)
    if isinstance(exc, RequestTimeout):
        response.headers["Connection"] = "close"  # the rest of the stalled body is not worth waiting for
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(status, HTTP_MESSAGES.get(status, (exc.name or "error").lower()))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected_error(exc: Exception) -> Response:
    log.exception("HTTP %s %s crashed", request.method, request.path)
    return error_response(500)
