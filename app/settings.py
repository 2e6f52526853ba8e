"""Smooth's configuration: one frozen, typed object read once from the environment.

``Settings.from_env(environ)`` is the only place in the code base that reads environment
variables (``gunicorn.conf.py`` and the dev launcher call it and pass the result down).
Every field declares its environment key, default and a one-line meaning; the README's
configuration table is generated from these declarations (``python -m app.settings``).
It is also the only place that writes one: ``export_metrics_dir`` hands prometheus_client,
which reads its directory from the environment, the value of ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Settings", "SettingsError", "DEV_JWT_SECRET", "markdown_table", "export_metrics_dir"]

# Base64 of "smooth-dev-secret-do-not-use-in-production-0123456789" (the embedded stack's key).
DEV_JWT_SECRET = "c21vb3RoLWRldi1zZWNyZXQtZG8tbm90LXVzZS1pbi1wcm9kdWN0aW9uLTAxMjM0NTY3ODk="

DAY = 86_400
# This host only: the default of every "who may call without a credential" network list.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
# The variable prometheus_client reads (app/metrics.py); also the metrics_dir setting's key.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot accept."""


def _setting(env: str, default: Any, doc: str, *, minimum: float | None = None,
             choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "minimum": minimum, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Every tunable of the chat server, the presence server and the dev launcher."""

    # Network
    bind_host: str = _setting("BIND_HOST", "127.0.0.1", "Address the chat and presence servers listen on")
    chat_http_port: int = _setting("CHAT_HTTP_PORT", 8080, "Chat server HTTP/WebSocket port", minimum=1)
    presence_tcp_port: int = _setting("PRESENCE_TCP_PORT", 10001, "Presence server TCP line-protocol port", minimum=1)
    presence_http_port: int = _setting("PRESENCE_HTTP_PORT", 8088, "Presence server HTTP port", minimum=1)
    presence_host: str = _setting("PRESENCE_HOST", "127.0.0.1", "Host the chat server reaches presence on")
    chat_server_url: str = _setting(
        "CHAT_SERVER_URL", "", "Base URL presence POSTs voice `out` events to (default: this stack's chat server)"
    )
    chat_workers: int = _setting("CHAT_WORKERS", 1, "gunicorn worker processes for the chat server", minimum=1)
    worker_connections: int = _setting(
        "CHAT_WORKER_CONNECTIONS", 12000,
        "Most simultaneous client connections per chat worker; past it a request gets 503 (health paths excepted)",
        minimum=1,
    )
    health_reserve: int = _setting(
        "CHAT_HEALTH_RESERVE", 64,
        "Connections a chat worker takes beyond CHAT_WORKER_CONNECTIONS, so `/healthz` and `/readyz` answer "
        "(and other requests get their 503) when it is full",
        minimum=1,
    )
    header_timeout_s: float = _setting(
        "CHAT_HEADER_TIMEOUT_S", 10.0,
        "Time a connection has to send an HTTP request line and headers (each request, keep-alive included) "
        "before it is closed",
        minimum=0.1,
    )
    body_idle_timeout_s: float = _setting(
        "CHAT_BODY_IDLE_TIMEOUT_S", 30.0,
        "Longest a request's body (an upload, a JSON POST) or an HTTP response may go without a byte "
        "moving before the request is answered 408 (or the connection closed); WebSockets are exempt",
        minimum=0.1,
    )
    node_id: str = _setting("CHAT_NODE_ID", "", "Name of this chat node (default: hostname-port)")

    # Auth
    jwt_secret: str = _setting(
        "JWT_SECRET", DEV_JWT_SECRET, "Base64 HS256 key shared with the auth service (default: dev-only key)"
    )
    service_token: str = _setting(
        "SERVICE_TOKEN", "",
        "Secret of service-to-service calls (`X-Service-Token`; membership PUTs, presence callbacks, both "
        "servers' `/metrics`, where `Authorization: Bearer` works too). Set: required from every caller. Empty: "
        "only SERVICE_ALLOWED_NETWORKS may call. `make run` generates one"
    )
    service_allowed_networks: str = _setting(
        "SERVICE_ALLOWED_NETWORKS", LOOPBACK_NETWORKS,
        "Comma-separated CIDR list of the callers service endpoints (and `/metrics`) accept while "
        "SERVICE_TOKEN is empty"
    )
    presence_token: str = _setting(
        "PRESENCE_TOKEN", "",
        "Secret a chat node shows presence (`auth` line) before `lease`, `sync` and node logouts. Empty: "
        "presence trusts every connection from PRESENCE_ALLOWED_NETWORKS with those. `make run` generates one"
    )
    presence_allowed_networks: str = _setting(
        "PRESENCE_ALLOWED_NETWORKS", LOOPBACK_NETWORKS,
        "Comma-separated CIDR list whose presence TCP connections are served without `auth` (the original "
        "chat and signaling servers send no credential); a connection from elsewhere must send `auth` with "
        "PRESENCE_TOKEN first, and with no token set it is refused"
    )

    # Backends
    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS", "", "Kafka bootstrap list; empty: `make run` starts the embedded broker"
    )
    mongo_url: str = _setting("MONGO_URL", "", "MongoDB URL; empty: `make run` starts the embedded MongoDB-wire server")
    mongo_db: str = _setting("MONGO_DB", "smooth", "MongoDB database name")
    redis_url: str = _setting("REDIS_URL", "", "Redis URL for the chat cache; empty: `make run` starts Redis")
    presence_redis_url: str = _setting(
        "PRESENCE_REDIS_URL", "", "Redis URL for presence state (default: REDIS_URL, keys prefixed `presence:`)"
    )
    redis_pool_size: int = _setting(
        "REDIS_POOL_SIZE", 100, "Connections each Redis client (chat cache per worker, presence store) may open",
        minimum=1)
    mongo_pool_size: int = _setting("MONGO_POOL_SIZE", 100, "Connections each chat worker may open to MongoDB",
                                    minimum=1)
    backend_pool_wait_s: float = _setting(
        "BACKEND_POOL_WAIT_S", 5.0,
        "How long a request waits for a free Redis or MongoDB connection when its pool is in use before "
        "it fails with `service unavailable` (a burst waits; it is not refused)", minimum=0.01)
    data_dir: str = _setting("SMOOTH_DATA_DIR", "var", "Where the embedded servers keep data and logs")
    mongo_write_concern: str = _setting(
        "MONGO_WRITE_CONCERN", "journaled",
        "What a message write waits for before its RECEIPT: `journaled` (w:1, j:true: on the primary's "
        "disk) or `majority` (w:majority, j:true: on a majority of a replica set's disks)",
        choices=("journaled", "majority"),
    )

    # Other services (all optional)
    auth_service_url: str = _setting(
        "AUTH_SERVICE_URL", "", "Auth service base URL for author names/avatars; empty: use client-sent values"
    )
    community_service_url: str = _setting(
        "COMMUNITY_SERVICE_URL", "", "Community service base URL for memberships; empty: the PUT endpoints rule"
    )
    notification_service_url: str = _setting(
        "NOTIFICATION_SERVICE_URL", "", "Notification service base URL for push notifications; empty: none"
    )
    service_timeout_s: float = _setting(
        "SERVICE_TIMEOUT_S", 3.0, "Timeout for calls to auth/community/notification services", minimum=0.01
    )

    # STOMP limits and timers
    stomp_max_frame_bytes: int = _setting("STOMP_MAX_FRAME_BYTES", 65536, "Largest inbound STOMP frame", minimum=64)
    stomp_max_header_lines: int = _setting("STOMP_MAX_HEADERS", 64, "Most header lines in one frame", minimum=1)
    stomp_max_header_bytes: int = _setting(
        "STOMP_MAX_HEADER_BYTES", 8192, "Largest header block of one frame", minimum=64
    )
    stomp_max_subscriptions: int = _setting(
        "STOMP_MAX_SUBSCRIPTIONS", 500, "Most subscriptions one connection may hold", minimum=1
    )
    stomp_max_subscriptions_per_destination: int = _setting(
        "STOMP_MAX_SUBSCRIPTIONS_PER_DESTINATION", 4,
        "Most subscriptions one connection may hold to one destination (each gets its own copy of every "
        "message); past it SUBSCRIBE gets ERROR",
        minimum=1,
    )
    send_rate_limit: int = _setting(
        "STOMP_SEND_RATE_LIMIT", 120,
        "SENDs one connection may make per STOMP_SEND_RATE_WINDOW_S (a token bucket: bursts up to this "
        "many); past it a SEND gets ERROR \"rate limit exceeded\" (0: no limit)",
        minimum=0,
    )
    send_rate_window_s: float = _setting(
        "STOMP_SEND_RATE_WINDOW_S", 60.0, "The window of STOMP_SEND_RATE_LIMIT", minimum=0.001
    )
    gc_gen0_threshold: int = _setting(
        "GC_GEN0_THRESHOLD", 10_000,
        "Chat workers' Python GC generation-0 threshold (CPython's default is 700; higher means "
        "fewer, longer collections)",
        minimum=1,
    )
    stomp_max_inflight_sends: int = _setting(
        "STOMP_MAX_INFLIGHT_SENDS", 64,
        "SENDs of one connection awaiting their Kafka ack (replies held behind them count too) "
        "before reading it pauses",
        minimum=1,
    )
    outbox_max_frames: int = _setting(
        "OUTBOX_MAX_FRAMES", 2000, "Frames queued for one slow client before it is disconnected", minimum=1
    )
    heartbeat_ms: int = _setting("STOMP_HEARTBEAT_MS", 10000, "Heart-beat interval the server offers (cx,cy)", minimum=0)
    heartbeat_tolerance: float = _setting(
        "STOMP_HEARTBEAT_TOLERANCE", 2.0, "Silence allowed, in agreed intervals, before closing", minimum=1.0
    )
    connect_timeout_s: float = _setting(
        "STOMP_CONNECT_TIMEOUT_S", 10.0, "Time a new connection has to send CONNECT", minimum=0.1
    )
    sockjs_heartbeat_s: float = _setting("SOCKJS_HEARTBEAT_S", 25.0, "SockJS `h` frame interval", minimum=0.1)
    sockjs_disconnect_delay_s: float = _setting(
        "SOCKJS_DISCONNECT_DELAY_S", 5.0, "How long a SockJS session outlives its last poll", minimum=0.1
    )
    sockjs_streaming_bytes: int = _setting(
        "SOCKJS_STREAMING_BYTES", 131072, "Bytes sent on one streaming response before it is recycled", minimum=1024
    )
    sockjs_jsonp: str = _setting(
        "SOCKJS_JSONP", "on", "Whether the SockJS `jsonp` and `jsonp_send` transports exist", choices=("on", "off")
    )
    sockjs_allowed_origins: str = _setting(
        "SOCKJS_ALLOWED_ORIGINS", "*",
        "Comma-separated origins (`https://app.example`, `null`) whose browsers may use `/my-chat`; `*`: any",
    )
    sockjs_client_url: str = _setting(
        "SOCKJS_CLIENT_URL", "",
        "The sockjs-client script `iframe.html` loads (default: the server's own copy at `/static/sockjs.min.js`)",
    )

    # Chat limits
    message_max_chars: int = _setting("MESSAGE_MAX_CHARS", 4000, "Longest message content", minimum=1)
    history_default_page_size: int = _setting("HISTORY_PAGE_SIZE", 50, "Default history page size", minimum=1)
    history_max_page_size: int = _setting("HISTORY_MAX_PAGE_SIZE", 100, "Largest history page size", minimum=1)
    message_count_max_rooms: int = _setting(
        "MESSAGE_COUNT_MAX_ROOMS", 1000, "Most rooms in one message-count request", minimum=1
    )
    typing_interval_s: float = _setting(
        "TYPING_INTERVAL_S", 3.0, "Minimum time between typing events of one user in one room", minimum=0.0
    )
    upload_max_bytes: int = _setting("UPLOAD_MAX_BYTES", 10 * 1024 * 1024, "Largest uploaded file", minimum=1)
    upload_allowed_types: str = _setting(
        "UPLOAD_ALLOWED_TYPES",
        "image/,video/,audio/,text/plain,application/pdf,application/zip,application/octet-stream",
        "Comma-separated content-type prefixes accepted for uploads",
    )
    membership_ttl_s: int = _setting("MEMBERSHIP_TTL_S", 14 * DAY, "TTL of cached member and channel lists", minimum=1)
    membership_local_ttl_s: float = _setting(
        "MEMBERSHIP_LOCAL_TTL_S", 300.0,
        "How long a chat process may reuse a member/channel list it read from Redis (0: every SEND asks "
        "Redis). Changes made through Smooth drop copies at once (Redis pub/sub); this bounds only "
        "changes written to Redis by hand",
        minimum=0,
    )
    profile_ttl_s: int = _setting("PROFILE_TTL_S", 600, "TTL of cached author names/avatars", minimum=1)

    # Kafka
    kafka_partitions: int = _setting("KAFKA_PARTITIONS", 3, "Partitions per topic when Smooth creates them", minimum=1)
    kafka_fetch_max_wait_ms: int = _setting(
        "KAFKA_FETCH_MAX_WAIT_MS", 20, "Fan-out consumers' fetch wait (latency vs. idle polling CPU)", minimum=0
    )
    kafka_idle_fetch_max_wait_ms: int = _setting(
        "KAFKA_IDLE_FETCH_MAX_WAIT_MS", 100,
        "Fan-out consumers' fetch wait once no record has arrived for 2 s (fewer idle fetches; the first "
        "record after a quiet spell waits longer). Set it to KAFKA_FETCH_MAX_WAIT_MS to turn this off; on a "
        "broker that answers a waiting fetch as soon as a record arrives (Apache Kafka) both can be long",
        minimum=0,
    )
    kafka_fetch_min_bytes: int = _setting(
        "KAFKA_FETCH_MIN_BYTES", 1,
        "Fan-out consumers' fetch min bytes: a fetch waits (up to the fetch wait) for this much data, so a busy "
        "stream comes in fewer, larger fetches (bench/FINDINGS.md)", minimum=1)
    kafka_linger_ms: int = _setting(
        "KAFKA_LINGER_MS", 0,
        "Producer linger (records still batch while a request is in flight; bench/kafka_micro.py)", minimum=0)
    kafka_send_timeout_s: float = _setting(
        "KAFKA_SEND_TIMEOUT_S", 5.0, "How long one produce waits for the broker's acknowledgement before it is "
        "retried (typing events are not retried)", minimum=0.1
    )

    # Delivery
    outbox_max_backlog: int = _setting(
        "OUTBOX_MAX_BACKLOG", 10_000,
        "Stored events one worker may hold unpublished (broker down or slow) before new SENDs are refused "
        "with ERROR \"delivery backlog full\"", minimum=1)
    outbox_stale_s: float = _setting(
        "OUTBOX_STALE_S", 30.0,
        "How long a stored event may stay unpublished before any worker's sweep publishes it (a crashed "
        "worker's backlog); longer than KAFKA_SEND_TIMEOUT_S", minimum=1.0)
    idempotency_retention_s: int = _setting(
        "IDEMPOTENCY_RETENTION_S", DAY,
        "How long a SEND's `nonce` (or `idempotency-key` header) is remembered: a repeat within it stores "
        "nothing new and gets the original RECEIPT", minimum=DAY)
    resume_max_events: int = _setting(
        "RESUME_MAX_EVENTS", 5_000,
        "The most events one resume (`SUBSCRIBE` with `since-seq`) replays; a client further behind gets a "
        "reset and reloads history", minimum=1)
    event_retention_s: int = _setting(
        "EVENT_RETENTION_S", 7 * DAY,
        "How long each room's event log keeps events for resumes and gap healing; a resume from further back "
        "gets a reset", minimum=3600)
    quiet_room_check_s: float = _setting(
        "QUIET_ROOM_CHECK_S", 5.0,
        "How often each worker looks for rooms that went quiet with an event it never received (a record the "
        "broker lost), and delivers it from the log", minimum=0.1)

    # Presence
    presence_retention_s: int = _setting("PRESENCE_RETENTION_S", 14 * DAY, "How long presence state is kept", minimum=1)
    presence_max_line_bytes: int = _setting(
        "PRESENCE_MAX_LINE_BYTES", 65536, "Longest presence request line", minimum=64
    )
    presence_max_connections: int = _setting(
        "PRESENCE_MAX_CONNECTIONS", 2000, "Most simultaneous presence TCP connections", minimum=1
    )
    presence_idle_timeout_s: float = _setting(
        "PRESENCE_IDLE_TIMEOUT_S", 300.0,
        "Presence closes a TCP connection that sends no complete line for this long (idle, or a line "
        "that never ends); longer than NODE_LEASE_S / 3, the chat nodes' lease renewal", minimum=1.0
    )
    presence_timeout_s: float = _setting(
        "PRESENCE_TIMEOUT_S", 1.0, "Chat-side timeout for one presence request", minimum=0.01
    )
    presence_pool_size: int = _setting("PRESENCE_POOL_SIZE", 8, "Chat-side presence connections per worker", minimum=1)
    node_lease_s: float = _setting(
        "NODE_LEASE_S", 15.0, "A chat node's presence lease; its users go offline this long after it dies", minimum=1.0
    )

    # Demo
    demo_enabled: str = _setting(
        "DEMO_ENABLED", "off",
        "Whether the chat server serves the browser demo at `/demo` and its dev-only token and membership "
        "endpoint (`/demo/session`, which mints tokens with JWT_SECRET for anyone). `make run` turns it on; "
        "never in production", choices=("on", "off"))

    # Logging and metrics
    log_level: str = _setting("LOG_LEVEL", "INFO", "Python logging level")
    log_format: str = _setting(
        "LOG_FORMAT", "text",
        "`text`: one readable line per record; `json`: one JSON object per line (time, level, logger, message, "
        "pid, and the STOMP session or HTTP request id where there is one)", choices=("text", "json"))
    metrics_dir: str = _setting(
        METRICS_DIR_ENV, "",
        "Directory where the chat server's gunicorn workers keep their metrics for `/metrics` "
        "(prometheus_client's multiprocess mode); emptied when the chat server starts. Default: "
        "`<SMOOTH_DATA_DIR>/metrics-<CHAT_HTTP_PORT>`. The presence server ignores it (one process)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``), then apply ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(spec.metadata["env"])
            if raw is not None and raw != "":
                values[spec.name] = _parse(spec, raw)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            minimum = spec.metadata["minimum"]
            value = getattr(self, spec.name)
            if minimum is not None and value < minimum:
                raise SettingsError(f"{spec.metadata['env']} must be >= {minimum}, got {value!r}")
            choices = spec.metadata["choices"]
            if choices is not None and value not in choices:
                raise SettingsError(f"{spec.metadata['env']} must be one of {', '.join(choices)}, got {value!r}")

    # Derived values: computed, never stored, so overrides stay consistent.
    @property
    def effective_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}-{self.chat_http_port}"

    @property
    def effective_presence_redis_url(self) -> str:
        return self.presence_redis_url or self.redis_url

    @property
    def effective_chat_server_url(self) -> str:
        return self.chat_server_url or f"http://127.0.0.1:{self.chat_http_port}"

    @property
    def effective_metrics_dir(self) -> str:
        return self.metrics_dir or os.path.join(self.data_dir, f"metrics-{self.chat_http_port}")

    @property
    def upload_type_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.upload_allowed_types.split(",") if p.strip())

    @property
    def sockjs_origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.sockjs_allowed_origins.split(",") if o.strip())

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    def with_generated_secrets(self) -> "Settings":
        """These settings with a random ``SERVICE_TOKEN`` and ``PRESENCE_TOKEN`` where none is set:
        what ``make run`` (and the tests that start whole stacks) hand to every process."""
        return dataclasses.replace(self, service_token=self.service_token or secrets.token_urlsafe(32),
                                   presence_token=self.presence_token or secrets.token_urlsafe(32))

    def as_environ(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {
            spec.metadata["env"]: str(getattr(self, spec.name))
            for spec in dataclasses.fields(self)
            # Set but empty would still switch prometheus_client to multiprocess mode (into the
            # working directory) in any child that imports it: unset means the same default.
            if spec.metadata["env"] != METRICS_DIR_ENV or self.metrics_dir
        }

    def child_environ(self) -> dict[str, str]:
        """This process's environment with these settings applied (for launching children)."""
        return {**os.environ, **self.as_environ()}


def export_metrics_dir(path: str | None) -> None:
    """Set (a chat server's gunicorn master, before forking) or remove (a single process) the
    ``PROMETHEUS_MULTIPROC_DIR`` prometheus_client reads itself, once, when it is imported.

    Removing matters: launchers pass every setting on (``child_environ``), and an empty value
    would still switch prometheus_client to multiprocess mode, writing into the working directory.
    """
    if path:
        os.environ[METRICS_DIR_ENV] = path
    else:
        os.environ.pop(METRICS_DIR_ENV, None)


def _parse(spec: dataclasses.Field[Any], raw: str) -> Any:
    kind = _field_type(spec)
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{spec.metadata['env']}: cannot read {raw!r} as {kind.__name__}") from None


def _field_type(spec: dataclasses.Field[Any]) -> type:
    hints = typing.get_type_hints(Settings)
    kind = hints[spec.name]
    if isinstance(kind, types.UnionType):
        kind = next(arg for arg in kind.__args__ if arg is not type(None))
    return kind  # type: ignore[no-any-return]


def markdown_table() -> str:
    """The README's configuration table, generated from the declarations above."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for spec in dataclasses.fields(Settings):
        default = spec.default if spec.default != "" else "(empty)"
        if spec.name == "jwt_secret":
            default = "dev-only key"
        rows.append(f"| `{spec.metadata['env']}` | `{default}` | {spec.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
