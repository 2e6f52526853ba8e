"""Shared pieces of the chat HTTP API: the response wrapper and strict input parsing.

Responses use the original wrapper (protocol.md §6.1): success is
``{"isSuccess":true,"code":1000,"message":"요청에 성공하였습니다.","result":…}`` (keys in that
order, ``result`` only when there is one); an error is
``{"isSuccess":false,"code":<HTTP status>,"message":"<short fixed text>"}`` with that 4xx/5xx.

Request data never reaches a query as anything but a validated ``int`` or ``str``:
query parameters are read by exact name, must appear once and must be plain digits, so
``ch_id[$ne]=1`` is simply a missing ``ch_id``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from app.errors import BadRequest, ChatServerError

__all__ = [
    "query_int",
    "query_str",
    "json_body",
    "positive_int",
    "positive_int_list",
]

_DIGITS = re.compile(r"[0-9]{1,18}")


# -- input parsing -----------------------------------------------------------------------


def query_str(name: str) -> str | None:
    """The single value of query parameter ``name``; repeated → 400."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"{name}: given more than once")
    return values[0] if values else None


def query_int(name: str, *, default: int | None = None, minimum: int = 0, maximum: int | None = None) -> int:
    """A plain-digits query parameter within ``[minimum, maximum]``; missing → ``default`` or 400."""
    raw = query_str(name)
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"{name}: required")
        return default
    if not _DIGITS.fullmatch(raw):
        raise BadRequest(f"{name}: must be a non-negative integer")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"{name}: must be {bounds}")
    return value


def json_body(max_bytes: int) -> Any:
    """The request body parsed as JSON (any content type); too big → 413, not JSON → 400."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise _TooLarge()
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise _TooLarge()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body: invalid JSON") from None


def positive_int(value: Any, field: str) -> int:
    """A JSON number or a string of digits, > 0 (``true`` is not a number here)."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise BadRequest(f"{field}: must be a positive integer")
    return value


def positive_int_list(value: Any, field: str, max_items: int) -> list[int]:
    if not isinstance(value, list):
        raise BadRequest(f"{field}: must be an array of ids")
    if len(value) > max_items:
        raise BadRequest(f"{field}: at most {max_items} ids")
    return list(dict.fromkeys(positive_int(item, field) for item in value))


class _TooLarge(ChatServerError):
    wire_message = "request body too large"
    http_status = 413
