"""The outbound JSON client to the other services (auth, community, notification): the one
module that talks to them.

Standard library only (``urllib``), so it cooperates with gevent once ``socket`` is
monkey-patched, and it adds no dependency. Every call has a timeout. Failures map onto
``app.errors``:

- connection refused, DNS failure, timeout, HTTP 5xx, a body that is not JSON
  → ``BackendUnavailable`` (the dependency is down or broken; callers may degrade);
- HTTP 4xx → ``ServiceRefused`` (the service answered "no"; ``status`` says which).

Nothing here logs response bodies or request bodies: they may hold personal data.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any

from app.errors import BackendUnavailable, ServiceRefused

__all__ = ["ServiceHttp"]

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ServiceHttp:
    """``get_json``/``post_json`` with one timeout for connect and each read (``app.chat.ports.ServiceClient``)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = float(timeout_s)
        # No proxy from the environment: service URLs come from Settings only.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get_json(self, url: str) -> Any:
        """The decoded JSON body of ``GET url``."""
        return self._call(urllib.request.Request(url, method="GET", headers=_HEADERS))

    def post_json(self, url: str, body: Any) -> Any:
        """The decoded JSON body of ``POST url`` with ``body`` as JSON (None for an empty reply)."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {**_HEADERS, "Content-Type": "application/json"}
        return self._call(urllib.request.Request(url, data=data, method="POST", headers=headers))

    def _call(self, request: urllib.request.Request) -> Any:
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            if 400 <= exc.code < 500:
                raise ServiceRefused(exc.code) from None
            raise BackendUnavailable("service unavailable") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout):
            # URLError wraps refused connections and DNS errors; a read timeout is a bare OSError.
            raise BackendUnavailable("service unavailable") from None
        return _decode(raw)


_HEADERS = {"Accept": "application/json"}


def _decode(raw: bytes) -> Any:
    if len(raw) > MAX_RESPONSE_BYTES:
        raise BackendUnavailable("service response too large")
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise BackendUnavailable("service sent invalid JSON") from None
