"""The presence server: who is online and where (protocol.md §7), over a CRLF line protocol.

Modules:

- ``codec``: pure framing, request parsing (original pseudo-JSON and real JSON) and
  reply formatting.
- ``store``: the ``PresenceStore`` and ``ChatNotifier`` interfaces and their result
  types (what a store implementation imports, and nothing else of this package).
- ``fields``: the typed request fields (ids, room keys, locations), checked against
  ``app/destinations.py``.
- ``handler``: request -> store calls -> reply.
- ``server``: the gevent TCP server and the service that runs it with the HTTP API and
  the reaper around one store; ``http``: the Flask API on PRESENCE_HTTP_PORT;
  ``reaper``: node-lease expiry and the POSTs to the chat server. All of them receive
  the store; none imports a backend.
- ``composition``: the one place the process is assembled from ``Settings`` (the Redis
  store, the chat notifier, the service); ``__main__``: ``python -m app.tcp_presence``.

The real store is ``app/backends/redis_presence.py``; the chat side's client is
``app/presence_client.py``. Importing this package starts nothing and imports neither
gevent nor redis: import the module you need.
"""
