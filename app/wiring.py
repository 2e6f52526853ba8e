"""The composition root: builds everything one chat-server process runs.

``build_services(settings)`` picks the implementations (MongoDB, Redis, Kafka, presence,
the auth/community/notification services) and returns the ``Services`` bundle the web app
and the worker lifecycle use. Nothing here opens a connection: every client connects
lazily, so building in the gunicorn master and running in a forked worker is safe; the
consumers and background greenlets start in ``Services.start`` (after the fork).

``create_topics(settings)`` creates the Kafka topics (the dev launcher calls it once).
"""

from __future__ import annotations

from app.auth import TokenVerifier
from app.backends import kafka_bus
from app.backends.http_services import ServiceHttp
from app.backends.mongo_history import MongoReadSide
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.backends.redis_cache import MembershipChanges, RedisMembershipCache
from app.chat.access import Access
from app.chat.application import ChatService
from app.chat.handlers import Authors, Messaging
from app.chat.http import create_blueprint, create_service_blueprint
from app.chat.membership import Membership
from app.chat.notifications import Notifier
from app.chat.presence_flow import PresenceFlow, worker_node_id
from app.chat.profiles import Profiles
from app.contracts import LocalDelivery, Services
from app.presence_client import PresenceClient
from app.settings import Settings
from workers.consumers import FANOUT_GROUP, FANOUT_TOPICS, ConsumerSet, FanoutConsumer, consumer_instance, group_id
from workers.lifecycle import LeaseRenewer, WorkerRuntime

__all__ = ["build_services", "create_topics"]


def build_services(settings: Settings) -> Services:
    """The ``Services`` bundle of one chat-server process."""
    mongo = MongoConnection(settings)
    read_side = MongoReadSide(mongo.db)
    cache = RedisMembershipCache(settings.redis_url, settings.membership_ttl_s)
    http = ServiceHttp(settings.service_timeout_s)
    membership = Membership(settings, cache, http)
    bus = kafka_bus.KafkaEventBus(settings)
    flow_ref: list[PresenceFlow] = []
    # The client runs on_recovered in its own greenlet when presence answers again.
    presence = PresenceClient(settings, on_recovered=lambda: flow_ref[0].resync())
    profiles = Profiles(settings, cache, http)
    writer = MongoMessageWriter(mongo)
    verifier = TokenVerifier(settings.jwt_secret)
    access = Access(membership)
    notifier = Notifier(settings, http=http, presence=presence, membership=membership)
    messaging = Messaging(store=writer, bus=bus, access=access, authors=Authors(profiles), observer=notifier,
                          typing_interval_s=settings.typing_interval_s)
    flow = PresenceFlow(presence=presence, bus=bus, membership=membership, read_markers=read_side,
                        access=access, node_id=lambda: worker_node_id(settings))
    flow_ref.append(flow)
    runtime = WorkerRuntime(
        open_consumers=lambda delivery: _consumers(settings, delivery),
        lease=LeaseRenewer(flow.renew_lease, settings.node_lease_s / 3),
        background=[MembershipChanges(settings.redis_url, membership.list_changed, membership.forget_all)],
        prepare=mongo.ensure_indexes,
        closers=[notifier.stop, bus.close, presence.close, cache.close, mongo.close])
    application = ChatService(messaging=messaging, presence=flow, access=access,
                              message_max_chars=settings.message_max_chars)
    blueprints = [
        create_blueprint(settings, membership=membership, profiles=profiles, history=read_side,
                         markers=read_side, files=read_side, messaging=messaging, verifier=verifier),
        create_service_blueprint(settings, bus=bus, offline=flow, verifier=verifier),
    ]
    return Services(application=application, blueprints=blueprints,
                    readiness={"mongo": mongo.ping, "redis": cache.ping, "kafka": runtime.kafka_ready},
                    start=runtime.start, stop=runtime.stop)


def create_topics(settings: Settings) -> list[str]:
    """Create Smooth's Kafka topics (idempotent); returns the newly created names."""
    return kafka_bus.create_topics(settings)


def _consumers(settings: Settings, delivery: LocalDelivery) -> ConsumerSet:
    group = group_id(FANOUT_GROUP, consumer_instance(worker_node_id(settings)))

    def open_source() -> kafka_bus.RecordSource:
        return kafka_bus.RecordSource(settings, FANOUT_TOPICS, group)

    return ConsumerSet([FanoutConsumer(FANOUT_GROUP, open_source, delivery)])
