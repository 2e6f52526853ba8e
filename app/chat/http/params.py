"""Strict parsing of the chat HTTP API's input: query parameters, JSON bodies and ids in them.

Request data never reaches a query as anything but a validated ``int`` or ``str``: query
parameters are read by exact name and must appear once, so ``ch_id[$ne]=1`` is simply a
missing ``ch_id``. Ids (query, path or body) are canonical ids of ``app.destinations``;
page numbers and sizes are plain non-negative integers.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from app import json_input
from app.destinations import MAX_ID, parse_id
from app.errors import BadRequest, ChatServerError

__all__ = [
    "query_str",
    "query_int",
    "query_id",
    "json_body",
    "positive_int",
    "positive_int_list",
]

_PLAIN_NUMBER = re.compile(r"[0-9]{1,18}")


def query_str(name: str) -> str | None:
    """The single value of query parameter ``name``; repeated → 400."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"{name}: given more than once")
    return values[0] if values else None


def query_int(name: str, *, default: int | None = None, minimum: int = 0, maximum: int | None = None) -> int:
    """A plain-digits count (page, size) within ``[minimum, maximum]``; missing → ``default`` or 400."""
    raw = query_str(name)
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"{name}: required")
        return default
    if not _PLAIN_NUMBER.fullmatch(raw):
        raise BadRequest(f"{name}: must be a non-negative integer")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"{name}: must be {bounds}")
    return value


def query_id(name: str) -> int:
    """A required query parameter holding a canonical id."""
    raw = query_str(name)
    if raw is None or raw == "":
        raise BadRequest(f"{name}: required")
    ident = parse_id(raw)
    if ident is None:
        raise BadRequest(f"{name}: must be a positive integer")
    return ident


def json_body(max_bytes: int) -> Any:
    """The request body parsed as JSON (any content type); too big → 413, not JSON → 400."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise _TooLarge()
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise _TooLarge()
    try:
        return json_input.loads(raw)
    except json_input.MalformedJSON:
        raise BadRequest(f"body: {json_input.MALFORMED_JSON}") from None


def positive_int(value: Any, field: str) -> int:
    """An id sent as a JSON number or as a canonical id string (``true`` is not a number here)."""
    if isinstance(value, str):
        value = parse_id(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise BadRequest(f"{field}: must be a positive integer")
    return value


def positive_int_list(value: Any, field: str, max_items: int) -> list[int]:
    """A JSON array of ids, duplicates dropped (first place kept), at most ``max_items`` long."""
    if not isinstance(value, list):
        raise BadRequest(f"{field}: must be an array of ids")
    if len(value) > max_items:
        raise BadRequest(f"{field}: at most {max_items} ids")
    return list(dict.fromkeys(positive_int(item, field) for item in value))


class _TooLarge(ChatServerError):
    wire_message = "request body too large"
    http_status = 413


# Event numbers fit in 15 digits (below 2**53: exact in JavaScript).
SEQ_MAX_DIGITS = 15


def query_seq(name: str) -> int | None:
    """An optional event number (plain digits); absent → None."""
    raw = query_str(name)
    if raw is None or raw == "":
        return None
    if not _PLAIN_NUMBER.fullmatch(raw) or len(raw) > SEQ_MAX_DIGITS:
        raise BadRequest(f"{name}: must be a non-negative integer of at most {SEQ_MAX_DIGITS} digits")
    return int(raw)
