"""Each metric family moves when its thing happens (read back from prometheus_client's registry).

The tests run in one process, so prometheus_client keeps the values in memory (no
``PROMETHEUS_MULTIPROC_DIR``); tests/integration/test_metrics.py scrapes the real servers,
gunicorn's workers added up. Counters are compared before and after, since other tests of
the session move them too.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import redis
from kafka.errors import KafkaTimeoutError
from prometheus_client.parser import text_string_to_metric_families

import app.metrics as metrics
from app.auth import TokenVerifier
from app.backends.kafka_bus import BrokerAck
from app.backends.redis_cache import RedisMembershipCache
from app.chat import events
from app.chat.model import TOPICS
from app.contracts import ChatDomain
from app.errors import BackendUnavailable
from app.service_auth import ServiceCallers, parse_networks
from app.settings import DEV_JWT_SECRET, Settings
from app.stomp.registry import SubscriptionRegistry
from app.stomp.session import SessionHub
from app.tcp_presence.handler import PresenceHandler
from app.tcp_presence.http import create_presence_http_app
from app.web import ChatServer
from app.stomp.ws import ConnectionGate
from tests.fakes import RecordingDelivery
from tests.support.presence import MemoryPresenceStore, RecordingNotifier
from tests.unit.test_consumers import FakeSource, Record, run_until
from tests.unit.test_stomp_handler import Application, frame, new_handler, token
from workers.consumers import FanoutConsumer


def value(name: str, **labels: str) -> float:
    registry = metrics.PRESENCE_REGISTRY if name.startswith("smooth_presence") else metrics.CHAT_REGISTRY
    return registry.get_sample_value(name, labels) or 0.0


class Moved:
    """The change of one sample across a ``with`` block."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels

    def __enter__(self) -> "Moved":
        self.before = value(self.name, **self.labels)
        return self

    def __exit__(self, *exc: object) -> None:
        self.by = value(self.name, **self.labels) - self.before


def hub() -> SessionHub:
    return SessionHub(Settings(), Application(), TokenVerifier(DEV_JWT_SECRET), SubscriptionRegistry(), "node-a")


# -- the chat transport ----------------------------------------------------------------------------


def test_connections_and_subscriptions_are_sampled_per_transport_and_the_backlog_beside_them():
    sessions = hub()
    ws = sessions.open_session("s1", "websocket")
    sessions.open_session("s2", "websocket")
    polling = sessions.open_session("s3", "xhr-polling")
    sessions.registry.add(ws, "sub-1", "/topic/direct/1")
    sessions.registry.add(ws, "sub-2", "/topic/direct/2")
    sessions.registry.add(polling, "sub-1", "/topic/direct/1")
    server = ChatServer(domain=ChatDomain(application=Application(), backlog=lambda: 7), hub=sessions,
                        delivery=None, endpoint=None, flask_app=None,  # type: ignore[arg-type]
                        connection_gate=ConnectionGate(header_timeout_s=10, max_connections=10, reserve=1))
    server.sample_metrics()
    assert value("smooth_stomp_connections", transport="websocket") == 2
    assert value("smooth_stomp_connections", transport="xhr-polling") == 1
    assert value("smooth_stomp_subscriptions", transport="websocket") == 2
    assert value("smooth_stomp_subscriptions", transport="xhr-polling") == 1
    assert value("smooth_outbox_backlog") == 7
    sessions.release(polling)
    server.sample_metrics()
    assert value("smooth_stomp_connections", transport="xhr-polling") == 0  # gone, not stale


@pytest.mark.parametrize("destination, outcome", [("/kafka/echo", "ok"), ("/kafka/refuse", "refused"),
                                                  ("/kafka/crash", "failed"), ("/kafka/nowhere", "refused")])
def test_sends_are_counted_by_destination_and_outcome_with_their_time_to_reply(destination, outcome):
    handler = new_handler(Application(), SubscriptionRegistry())
    handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
    label = destination if destination != "/kafka/nowhere" else metrics.OTHER  # unknown ones: one label
    with Moved("smooth_stomp_sends_total", destination=label, outcome=outcome) as sends, \
            Moved("smooth_stomp_send_reply_seconds_count", destination=label) as timed:
        handler.receive_frame(frame("SEND", b"{}", destination=destination, receipt="r1"))
    assert sends.by == 1 and timed.by == 1


def test_a_send_left_in_flight_is_counted_when_its_reply_is_known():
    class Later:
        def __init__(self, error=None):
            self.error = error

        def wait(self):
            if self.error:
                raise self.error
            return {"message-id": "m1"}

    app = Application()
    app.send_handlers["/kafka/later"] = lambda conn, body, key=None: Later()
    app.send_handlers["/kafka/unavailable"] = lambda conn, body, key=None: Later(BackendUnavailable())
    handler = new_handler(app, SubscriptionRegistry())
    handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
    with Moved("smooth_stomp_sends_total", destination="/kafka/later", outcome="ok") as sends:
        pending = handler.receive_frame(frame("SEND", b"x", destination="/kafka/later", receipt="r1")).pending
        assert value("smooth_stomp_sends_total", destination="/kafka/later", outcome="ok") == sends.before
        assert pending.wait() == {"message-id": "m1"}
    assert sends.by == 1
    with Moved("smooth_stomp_sends_total", destination="/kafka/unavailable", outcome="failed") as failed:
        pending = handler.receive_frame(frame("SEND", b"x", destination="/kafka/unavailable")).pending
        with pytest.raises(BackendUnavailable):
            pending.wait()
    assert failed.by == 1


def test_a_slow_consumer_is_counted_by_transport():
    session = hub().open_session("s1", "xhr-streaming")
    with Moved("smooth_stomp_slow_consumer_disconnects_total", transport="xhr-streaming") as dropped:
        session.close_slow_consumer()
        session.close_slow_consumer()  # closed already: not twice
    assert dropped.by == 1


# -- the fan-out -----------------------------------------------------------------------------------


def test_a_poll_batch_reports_records_deliveries_latency_and_lag_once():
    delivery = RecordingDelivery()
    produced = int(time.time() * 1000) - 250
    source = FakeSource([[Record(TOPICS["direct_etc"], events.delete_record(17, "m1"), produced),
                          Record(TOPICS["direct_etc"], events.delete_record(17, "m2"), produced),
                          Record(TOPICS["direct_etc"], b"garbage", produced)]])
    consumer = FanoutConsumer("fanout", lambda resume_from: source, delivery)
    with Moved("smooth_fanout_records_total") as records, Moved("smooth_fanout_deliveries_total") as deliveries, \
            Moved("smooth_fanout_delivery_seconds_count") as timed, \
            Moved("smooth_fanout_delivery_seconds_bucket", le="0.1") as fast:
        run_until(consumer, lambda: len(delivery.delivered) == 2 and value("smooth_fanout_records_total") > 0)
    assert records.by == 3  # the record that could not be delivered was read all the same
    assert deliveries.by == 2
    assert timed.by == 2 and fast.by == 0  # produced 250 ms before it was written: not under 100 ms
    assert value("smooth_fanout_consumer_lag", topic="t", partition="0") == 3


def test_a_busy_batch_observes_a_bounded_sample_of_its_latencies():
    with Moved("smooth_fanout_delivery_seconds_count") as timed:
        metrics.fanout_batch(100, 200, [int(time.time() * 1000)] * 100)
    assert timed.by == metrics.LATENCY_SAMPLES_PER_BATCH


def test_gap_healing_counts_are_reported_as_they_grow():
    consumer = FanoutConsumer("fanout", lambda resume_from: FakeSource([]), RecordingDelivery())
    consumer.healer = SimpleNamespace(healed=0, dropped=0, check_quiet=lambda: None)
    consumer._source = FakeSource([])
    with Moved("smooth_gap_healed_events_total") as healed, Moved("smooth_gap_duplicate_records_total") as dropped:
        consumer.healer.healed, consumer.healer.dropped = 3, 1
        consumer._poll_once()
        consumer.healer.dropped = 2
        consumer._poll_once()
        consumer._poll_once()
    assert healed.by == 3 and dropped.by == 2


# -- backends ----------------------------------------------------------------------------------------


def test_redis_calls_are_timed_and_failures_counted():
    cache = RedisMembershipCache("redis://127.0.0.1:1/0", 60)

    def get(key):
        return None

    def mget(keys):
        raise redis.ConnectionError("refused")

    with Moved("smooth_backend_call_seconds_count", backend="redis", operation="get") as calls:
        cache._call(get, "k")
    with Moved("smooth_backend_errors_total", backend="redis", operation="mget") as errors:
        with pytest.raises(BackendUnavailable):
            cache._call(mget, ["k"])
    assert calls.by == 1 and errors.by == 1
    cache.close()


def test_kafka_produce_is_timed_until_the_broker_acknowledges():
    class Future:
        def __init__(self, error=None):
            self.error = error

        def get(self, timeout):
            if self.error:
                raise self.error

    with Moved("smooth_backend_call_seconds_count", backend="kafka", operation="produce") as calls, \
            Moved("smooth_backend_errors_total", backend="kafka", operation="produce") as errors:
        BrokerAck(Future(), "t", time.monotonic() + 5, time.monotonic()).wait()
        with pytest.raises(BackendUnavailable):
            BrokerAck(Future(KafkaTimeoutError()), "t", time.monotonic() + 5, time.monotonic()).wait()
    assert calls.by == 2 and errors.by == 1


# -- presence --------------------------------------------------------------------------------------


def test_presence_lines_are_counted_by_type_and_outcome():
    handler = PresenceHandler(MemoryPresenceStore(), RecordingNotifier(), open_networks=parse_networks("127.0.0.0/8"))
    with Moved("smooth_presence_requests_total", protocol="tcp", type="login", outcome="ok") as logins, \
            Moved("smooth_presence_requests_total", protocol="tcp", type="other", outcome="refused") as refused:
        handler.handle_line(b'{"type":"login","session_id":"s1","user_id":"5"}')
        handler.handle_line(b'{"type":"no-such-type"}')
        handler.handle_line(b"garbage")
    assert logins.by == 1 and refused.by == 2


def test_presence_http_requests_are_counted_and_metrics_served():
    loopback = ServiceCallers("", parse_networks("127.0.0.0/8"))  # the test client calls from 127.0.0.1
    client = create_presence_http_app(MemoryPresenceStore(), services=loopback).test_client()
    with Moved("smooth_presence_requests_total", protocol="http", type="friends-state", outcome="ok") as ok, \
            Moved("smooth_presence_requests_total", protocol="http", type="friends-state", outcome="refused") as bad:
        assert client.post("/presence-server/friends-state", json=[5]).status_code == 200
        assert client.post("/presence-server/friends-state", json={"not": "a list"}).status_code == 400
    assert ok.by == 1 and bad.by == 1
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"smooth_presence_requests", "smooth_backend_call_seconds"} <= names


def test_each_server_shows_its_own_families_and_both_the_backend_calls():
    def families(registry):
        return {family.name: family for family in
                text_string_to_metric_families(metrics.exposition(registry)[0].decode())}

    chat, presence = families(metrics.CHAT_REGISTRY), families(metrics.PRESENCE_REGISTRY)
    assert {"smooth_stomp_sends", "smooth_fanout_deliveries", "smooth_backend_call_seconds"} <= chat.keys()
    assert "smooth_presence_requests" not in chat
    assert {"smooth_presence_requests", "smooth_backend_call_seconds", "process_cpu_seconds"} <= presence.keys()
    assert not any(name.startswith(("smooth_stomp", "smooth_fanout", "smooth_outbox")) for name in presence)
    assert all(family.documentation for family in chat.values())
    assert not any(sample.name.endswith("_created") for family in chat.values() for sample in family.samples)
