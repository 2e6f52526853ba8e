"""Smooth's Prometheus metrics: every family's name, help text, labels and buckets, in one place.

The chat server and the presence server serve them at ``/metrics`` (``exposition``), in the
Prometheus text format, through ``prometheus_client``. The code that sees a thing happen calls
one small function here (``send_finished``, ``fanout_batch``, ``backend_call``...); nothing
else names a metric. The README's "Operations" section lists the families.

**Across gunicorn workers** prometheus_client's multiprocess mode is used: each worker writes
its values to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker
adds up every worker's files (gauges of live state only over live workers). prometheus_client
picks the mode once, when it is imported, from that environment variable; gunicorn.conf.py
sets it (``app.settings.export_metrics_dir``) before any worker exists, empties the directory
at start and tells prometheus_client when a worker exits. Importing this module creates the
unlabelled metrics, and with them this process's files: the gunicorn master never imports it.
The presence server is one process and keeps its metrics in memory.

**Cost.** In multiprocess mode every ``inc``/``set``/``observe`` writes a memory-mapped
file under a lock (~1-2 us). So nothing here is called per delivered frame: the fan-out
consumer reports once per poll batch (``fanout_batch``), and gauges of live state (connections,
subscriptions, backlog) are sampled every ``SAMPLE_S`` rather than moved per event.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, disable_created_metrics, generate_latest,
                               multiprocess, values)

__all__ = ["exposition", "multiprocess_mode", "SAMPLE_S", "CHAT_REGISTRY", "PRESENCE_REGISTRY",
           "set_stomp_gauges", "send_finished", "slow_consumer", "fanout_batch", "set_consumer_lag",
           "set_outbox_backlog", "gap_healing", "backend_call", "backend_error", "backend_timed", "presence_request",
           "http_outcome",
           "OK", "REFUSED", "FAILED", "OTHER"]

_M = TypeVar("_M", Counter, Gauge, Histogram)

# A ``_created`` sample per counter and histogram, which the multiprocess mode has not either.
disable_created_metrics()

# How often a chat worker samples its gauges of live state (app/web.py).
SAMPLE_S = 2.0

# Outcome label values, shared by every family that has one.
OK = "ok"
REFUSED = "refused"  # the request was wrong or not allowed (a 4xx): the caller's side
FAILED = "failed"  # Smooth or a backend failed (a 5xx): ours
# The label value of anything outside a known, bounded set (unknown destinations, types).
OTHER = "other"

# Seconds. Chat operations are milliseconds on a quiet node and seconds when it saturates.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Which server exposes which family when its metrics are in memory (the presence server, and
# tests). The chat server's workers write files instead, which only they write and its
# multiprocess collector reads. Backend calls are counted on both.
CHAT_REGISTRY = CollectorRegistry()
PRESENCE_REGISTRY = CollectorRegistry()
# The presence process's own CPU, memory and GC (prometheus_client's collectors; they have no
# multiprocess form, so the chat server has none).
ProcessCollector(registry=PRESENCE_REGISTRY)
PlatformCollector(registry=PRESENCE_REGISTRY)
GCCollector(registry=PRESENCE_REGISTRY)


def _chat(metric: _M) -> _M:
    CHAT_REGISTRY.register(metric)
    return metric


def _presence(metric: _M) -> _M:
    PRESENCE_REGISTRY.register(metric)
    return metric


def _both(metric: _M) -> _M:
    return _presence(_chat(metric))


# -- the chat transport ----------------------------------------------------------------------------

STOMP_CONNECTIONS = _chat(Gauge(
    "smooth_stomp_connections", "Open STOMP connections, by transport (websocket, or the SockJS transport)",
    ["transport"], multiprocess_mode="livesum", registry=None))
STOMP_SUBSCRIPTIONS = _chat(Gauge(
    "smooth_stomp_subscriptions", "Live STOMP subscriptions, by the transport of their connection",
    ["transport"], multiprocess_mode="livesum", registry=None))
_transports_seen: set[str] = set()  # so a transport whose last connection closed shows 0
STOMP_SENDS = _chat(Counter(
    "smooth_stomp_sends", "SEND frames answered, by destination and outcome (ok: RECEIPT or none asked; "
    "refused: ERROR for the client's request; failed: ERROR for a failure of ours)",
    ["destination", "outcome"], registry=None))
STOMP_SEND_SECONDS = _chat(Histogram(
    "smooth_stomp_send_reply_seconds", "From a SEND's arrival to its reply (RECEIPT or ERROR) being queued, "
    "by destination", ["destination"], buckets=LATENCY_BUCKETS, registry=None))
STOMP_SLOW_CONSUMERS = _chat(Counter(
    "smooth_stomp_slow_consumer_disconnects", "Connections closed because their outbox filled up "
    "(ERROR slow consumer), by transport", ["transport"], registry=None))

# -- the fan-out ---------------------------------------------------------------------------------

FANOUT_RECORDS = _chat(Counter("smooth_fanout_records", "Kafka records the fan-out consumers read", registry=None))
FANOUT_DELIVERIES = _chat(Counter(
    "smooth_fanout_deliveries", "MESSAGE frames the fan-out handed to local subscriptions (counted per poll batch)", registry=None))
FANOUT_LATENCY = _chat(Histogram(
    "smooth_fanout_delivery_seconds", "From a record's production (its Kafka timestamp) to its MESSAGE frames "
    "being written to the local subscribers' sockets (records with local subscribers)", buckets=LATENCY_BUCKETS, registry=None))
FANOUT_LAG = _chat(Gauge(
    "smooth_fanout_consumer_lag", "Records of a partition not read yet by a fan-out consumer "
    "(the highest of the live workers)", ["topic", "partition"], multiprocess_mode="livemax", registry=None))
GAP_HEALED = _chat(Counter(
    "smooth_gap_healed_events", "Events read from a room's log and pushed because their record did not come "
    "(the broker lost it) or came out of order", registry=None))
GAP_DROPPED = _chat(Counter(
    "smooth_gap_duplicate_records", "Records dropped because their event was pushed already "
    "(published again, or read again after a broker restart)", registry=None))

# -- numbering ---------------------------------------------------------------------------------------

NUMBERING_ONE_CALL, NUMBERING_MISSED, NUMBERING_READ_BACK = "one-call", "missed", "read-back"
NUMBERING_ROUNDS = _chat(Counter(
    "smooth_numbering_rounds", "Group-commit rounds (and edits, deletes) numbered, by path: one-call (a "
    "compare-and-set on a counter the worker knew), missed (the counter had moved: then read-back too), "
    "read-back (an update and a read of the counters)", ["path"], registry=None))

# -- the outbox relay ------------------------------------------------------------------------------

OUTBOX_BACKLOG = _chat(Gauge(
    "smooth_outbox_backlog", "Stored events not acknowledged by the broker yet (all live workers)",
    multiprocess_mode="livesum", registry=None))

# -- backends --------------------------------------------------------------------------------------

BACKEND_SECONDS = _both(Histogram(
    "smooth_backend_call_seconds", "Latency of calls to MongoDB (per command), Redis (per operation) and Kafka "
    "(produce: until the broker's acknowledgement), failed ones included", ["backend", "operation"],
    buckets=LATENCY_BUCKETS, registry=None))
BACKEND_ERRORS = _both(Counter(
    "smooth_backend_errors", "Failed calls to MongoDB, Redis and Kafka (Kafka also: fetch, admin)",
    ["backend", "operation"], registry=None))

# -- presence --------------------------------------------------------------------------------------

PRESENCE_REQUESTS = _presence(Counter(
    "smooth_presence_requests", "Presence requests answered, by protocol (tcp, http), type and outcome",
    ["protocol", "type", "outcome"], registry=None))


# -- what the code calls ----------------------------------------------------------------------------


def set_stomp_gauges(by_transport: Mapping[str, tuple[int, int]]) -> None:
    """This worker's (connections, subscriptions) per transport; transports not named go to 0."""
    _transports_seen.update(by_transport)
    for transport in _transports_seen:
        connections, subscriptions = by_transport.get(transport, (0, 0))
        STOMP_CONNECTIONS.labels(transport).set(connections)
        STOMP_SUBSCRIPTIONS.labels(transport).set(subscriptions)


def send_finished(destination: str, outcome: str, started: float) -> None:
    """One SEND got its reply (``started``: ``time.perf_counter()`` at its arrival)."""
    _child(STOMP_SENDS, destination, outcome).inc()
    _child(STOMP_SEND_SECONDS, destination).observe(time.perf_counter() - started)


def slow_consumer(transport: str) -> None:
    STOMP_SLOW_CONSUMERS.labels(transport).inc()


# Records of one poll batch whose production-to-socket latency is observed (a sample of the batch).
LATENCY_SAMPLES_PER_BATCH = 8


def fanout_batch(records: int, deliveries: int, produced_ms: Iterable[int]) -> None:
    """One poll batch of the fan-out consumer, written to the sockets: how many records, how many
    frames, and the Kafka timestamps (ms) of the records that had local subscribers."""
    if records:
        FANOUT_RECORDS.inc(records)
    if deliveries:
        FANOUT_DELIVERIES.inc(deliveries)
    now_ms = time.time() * 1000
    stamps = list(produced_ms)
    # A sample, evenly spread over the batch: each observation writes the shared memory map
    # under a lock, and a busy batch holds hundreds of records (3 % of a many-rooms worker).
    for stamp in stamps[::max(1, -(-len(stamps) // LATENCY_SAMPLES_PER_BATCH))]:
        FANOUT_LATENCY.observe(max(0.0, now_ms - stamp) / 1000)


def set_consumer_lag(lag: Mapping[tuple[str, int], int]) -> None:
    """Records not read yet per (topic, partition), as this worker's consumer sees them."""
    for (topic, partition), behind in lag.items():
        FANOUT_LAG.labels(topic, str(partition)).set(behind)


def set_outbox_backlog(backlog: int) -> None:
    OUTBOX_BACKLOG.set(backlog)


def gap_healing(healed: int, dropped: int) -> None:
    """Events healed from the room logs and duplicate records dropped since the last call."""
    if healed:
        GAP_HEALED.inc(healed)
    if dropped:
        GAP_DROPPED.inc(dropped)


def numbering_round(path: str) -> None:
    """A round was numbered by ``path`` (``NUMBERING_ONE_CALL``, ``NUMBERING_MISSED``, ``NUMBERING_READ_BACK``)."""
    _child(NUMBERING_ROUNDS, path).inc()


def backend_call(backend: str, operation: str, seconds: float, failed: bool = False) -> None:
    """One call to a backend took ``seconds`` (and failed, if ``failed``)."""
    _child(BACKEND_SECONDS, backend, operation).observe(seconds)
    if failed:
        backend_error(backend, operation)


def backend_error(backend: str, operation: str) -> None:
    """A call to a backend failed (for calls whose time says nothing, like a Kafka fetch's wait)."""
    _child(BACKEND_ERRORS, backend, operation).inc()


@contextmanager
def backend_timed(backend: str, operation: str) -> Iterator[None]:
    """Time the block as one call to ``backend``; an exception out of it counts as a failure."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        backend_call(backend, operation, time.perf_counter() - started, failed=True)
        raise
    backend_call(backend, operation, time.perf_counter() - started)


def presence_request(protocol: str, kind: str, outcome: str) -> None:
    PRESENCE_REQUESTS.labels(protocol, kind, outcome).inc()


def http_outcome(status: int) -> str:
    """The outcome label of an HTTP answer's status."""
    return OK if status < 400 else REFUSED if status < 500 else FAILED


# Labelled children already made: ``labels()`` validates and locks on every call (several us),
# and the calls per SEND or backend call repeat a few label sets.
_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


# -- exposition and the multiprocess directory ------------------------------------------------------


def multiprocess_mode() -> bool:
    """Whether prometheus_client was imported with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text format of a server's metrics and its content type: ``registry``'s in one process,
    every worker's files in multiprocess mode (the chat server's workers)."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
