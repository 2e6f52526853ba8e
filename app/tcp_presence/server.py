"""The presence server process: TCP line server, HTTP API and lease reaper, started and
stopped together.

Owns:

- :class:`PresenceTcpServer`: a gevent ``StreamServer`` on PRESENCE_TCP_PORT with
  ``spawn=Pool(presence_max_connections)``. Each connection is served by one greenlet
  that reads, frames (:class:`~app.tcp_presence.codec.LineReader`), handles the lines in
  order and writes the replies: it is the connection's only reader and only writer, so
  replies leave in request order, exactly one per request line (protocol.md §7.1).
  A connection must complete a line at least every ``idle_timeout_s`` (idle, or a line
  that never ends: both are closed), and is closed once the handler marks its caller
  closed (too many errors in a row; the rest of what it sent is not answered).
- :class:`PresenceService`: the TCP server, the HTTP server (``pywsgi`` on
  PRESENCE_HTTP_PORT) and the reaper around the one store and chat notifier it is
  given, with ``start()`` / ``stop(timeout)``.
- :func:`run`: serve a service: start, wait for SIGTERM or SIGINT, stop gracefully
  (close listeners, let in-flight requests and POSTs finish within a bound), return the
  exit status.

The store is a parameter: which one (Redis) is decided by
:mod:`app.tcp_presence.composition`, so no backend is imported here.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from typing import Any, Final

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

from app.logs import log_context
from app.service_auth import ServiceCallers, parse_networks
from app.settings import Settings

from .codec import LineReader
from .handler import Caller, PresenceHandler
from .http import create_presence_http_app
from .reaper import HttpChatNotifier, LeaseReaper
from .store import ChatNotifier, PresenceStore

__all__ = ["PresenceTcpServer", "PresenceService", "run", "STOP_TIMEOUT_S"]

log = logging.getLogger(__name__)

RECV_BYTES: Final = 65536
# Graceful stop: how long in-flight requests and queued chat POSTs get to finish.
STOP_TIMEOUT_S: Final = 3.0
HTTP_MAX_CONNECTIONS: Final = 200


class PresenceTcpServer:
    """The CRLF line protocol over TCP; every line goes to ``handler``."""

    def __init__(self, handler: PresenceHandler, *, host: str, port: int, max_connections: int,
                 max_line_bytes: int, idle_timeout_s: float) -> None:
        self.handler = handler
        self.max_line_bytes = max_line_bytes
        self.idle_timeout_s = idle_timeout_s
        self._pool = Pool(max_connections)
        self._connections: set[socket.socket] = set()
        self._server = StreamServer((host, port), self._serve_connection, spawn=self._pool)

    def start(self) -> None:
        self._server.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop accepting, let every connection finish the requests it has read, then close.

        Shutting the read side down wakes connections idling in ``recv`` (the chat
        servers keep pooled connections open) with end-of-file, while a connection in
        the middle of a request still writes its replies; whatever is left after
        ``timeout`` is killed.
        """
        self._server.close()
        for sock in list(self._connections):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self._pool.join(timeout=timeout)
        self._pool.kill(block=True, timeout=1)

    def _serve_connection(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log_context(connection=f"{address[0]}:{address[1]}")
        reader = LineReader(self.max_line_bytes)
        caller = self.handler.connect(str(address[0]))
        self._connections.add(sock)
        try:
            self._serve_lines(sock, reader, caller)
        except OSError as error:  # socket.timeout included: idle, or a line that never ended
            log.debug("presence connection %s closed: %s", address, error)
        finally:
            self._connections.discard(sock)
            sock.close()

    def _serve_lines(self, sock: socket.socket, reader: LineReader, caller: Caller) -> None:
        last_line = time.monotonic()
        while not caller.closed:
            sock.settimeout(max(last_line + self.idle_timeout_s - time.monotonic(), 0.001))
            data = sock.recv(RECV_BYTES)
            if not data:
                return
            replies = []
            for event in reader.feed(data):
                last_line = time.monotonic()
                replies.append(self.handler.handle_event(event, caller))
                if caller.closed:
                    break
            if replies:
                sock.sendall(b"".join(replies))


class PresenceService:
    """Everything ``python -m app.tcp_presence`` runs, around one store and one notifier."""

    def __init__(self, settings: Settings, store: PresenceStore, notifier: ChatNotifier) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        handler = PresenceHandler(
            store, notifier, token=settings.presence_token,
            open_networks=parse_networks(settings.presence_allowed_networks, "PRESENCE_ALLOWED_NETWORKS"))
        self.tcp = PresenceTcpServer(handler,
                                     host=settings.bind_host, port=settings.presence_tcp_port,
                                     max_connections=settings.presence_max_connections,
                                     max_line_bytes=settings.presence_max_line_bytes,
                                     idle_timeout_s=settings.presence_idle_timeout_s)
        http_app = create_presence_http_app(store, services=ServiceCallers.from_settings(settings))
        self.http = WSGIServer((settings.bind_host, settings.presence_http_port), http_app,
                               spawn=Pool(HTTP_MAX_CONNECTIONS), log=None)
        self.reaper = LeaseReaper(store, notifier, lease_s=settings.node_lease_s)

    def start(self) -> None:
        self.tcp.start()
        self.http.start()
        self.reaper.start()
        log.info("presence listening: tcp %s:%d, http %s:%d, chat server %s", self.settings.bind_host,
                 self.settings.presence_tcp_port, self.settings.bind_host, self.settings.presence_http_port,
                 self.settings.effective_chat_server_url)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self.reaper.stop(timeout)
        self.http.stop(timeout=timeout)
        self.tcp.stop(timeout)
        if isinstance(self.notifier, HttpChatNotifier):
            self.notifier.join(timeout)
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def run(service: PresenceService) -> int:
    """Serve ``service`` until SIGTERM/SIGINT, then stop gracefully. Returns the exit status."""
    if not monkey.is_module_patched("socket"):
        raise RuntimeError("gevent.monkey.patch_all() must run before the presence server starts")
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    service.start()
    stopping.wait()
    log.info("presence stopping")
    service.stop(STOP_TIMEOUT_S)
    log.info("presence stopped")
    return 0
