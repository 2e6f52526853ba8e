"""The presence server process: TCP line server, HTTP API and lease reaper, started and
stopped together.

Owns:

- :class:`PresenceTcpServer`: a gevent ``StreamServer`` on PRESENCE_TCP_PORT with
  ``spawn=Pool(presence_max_connections)``. Each connection is served by one greenlet
  that reads, frames (:class:`~app.tcp_presence.codec.LineReader`), handles the lines in
  order and writes the replies: it is the connection's only reader and only writer, so
  replies leave in request order, exactly one per request line (protocol.md §7.1).
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
from typing import Any, Final

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

from app.settings import Settings

from .codec import LineReader
from .handler import PresenceHandler
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
                 max_line_bytes: int) -> None:
        self.handler = handler
        self.max_line_bytes = max_line_bytes
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
        reader = LineReader(self.max_line_bytes)
        self._connections.add(sock)
        try:
            while True:
                data = sock.recv(RECV_BYTES)
                if not data:
                    return
                replies = [self.handler.handle_event(event) for event in reader.feed(data)]
                if replies:
                    sock.sendall(b"".join(replies))
        except OSError as error:
            log.debug("presence connection %s closed: %s", address, error)
        finally:
            self._connections.discard(sock)
            sock.close()


class PresenceService:
    """Everything ``python -m app.tcp_presence`` runs, around one store and one notifier."""

    def __init__(self, settings: Settings, store: PresenceStore, notifier: ChatNotifier) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        self.tcp = PresenceTcpServer(PresenceHandler(store, notifier), host=settings.bind_host,
                                     port=settings.presence_tcp_port,
                                     max_connections=settings.presence_max_connections,
                                     max_line_bytes=settings.presence_max_line_bytes)
        self.http = WSGIServer((settings.bind_host, settings.presence_http_port), create_presence_http_app(store),
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
