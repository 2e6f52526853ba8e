"""The composition root: builds the whole chat server of one process from ``Settings``.

The only module that picks implementations (MongoDB, Redis, Kafka, presence, the
auth/community/notification services) and wires them together:

- :func:`build_chat_server` is what gunicorn serves (``app/wsgi.py``): the transport (the
  subscription registry, the session hub, the fan-out delivery, the ``/my-chat``
  endpoint), the chat domain built around that delivery, and the Flask app made from both.
- :func:`build_chat_domain` builds the domain alone, around a given ``LocalDelivery``;
  :func:`serve_chat_domain` puts the transport and the web app around any domain. Tests
  use them to observe deliveries or to serve a double of the application.
- :func:`create_topics` creates the Kafka topics (the dev launcher calls it once).

Nothing here opens a connection: every client connects lazily, and the consumer and the
background greenlets start in ``ChatServer.start`` (after the fork).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint

from app.auth import TokenVerifier
from app.backends import kafka_bus
from app.backends.http_services import ServiceHttp
from app.backends.mongo_history import MongoReadSide
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.backends.mongo_event_log import MongoEventLog
from app.backends.mongo_outbox import MongoOutbox
from app.backends.redis_cache import MembershipChanges, RedisMembershipCache
from app.chat.access import Access
from app.chat.application import ChatService
from app.chat.handlers import Authors, Messaging
from app.chat.http import create_blueprint, create_service_blueprint
from app.chat.membership import Membership
from app.chat.notifications import Notifier
from app.chat.presence_flow import PresenceFlow, worker_node_id
from app.chat.profiles import Profiles
from app.chat.relay import Relay
from app.chat.room_log import RoomLog
from app.chat.room_memory import RoomMemory
from app.contracts import ChatDomain, LocalDelivery
from app.demo import create_demo_blueprint
from app.presence_client import PresenceClient
from app.settings import Settings
from app.stomp.fanout import FanoutDelivery
from app.stomp.registry import SubscriptionRegistry
from app.stomp.session import SessionHub
from app.stomp.sockjs import ANY_ORIGIN, SockJSEndpoint, SockJSOptions, local_client_script
from app.stomp.ws import ConnectionGate
from app.web import ChatServer, create_flask_app
from workers.consumers import FANOUT_GROUP, FANOUT_TOPICS, Audience, FanoutConsumer, consumer_instance, group_id
from workers.lifecycle import LeaseRenewer, WorkerRuntime

__all__ = ["build_chat_server", "build_chat_domain", "serve_chat_domain", "create_topics", "sockjs_client",
           "STOMP_PREFIX", "SOCKJS_CLIENT_FILE", "STOMP_CLIENT_FILE"]

STOMP_PREFIX = "/my-chat"
# The sockjs-client copy `make` installs from npm (static/package.json).
SOCKJS_CLIENT_FILE = Path(__file__).resolve().parents[1] / "static/node_modules/sockjs-client/dist/sockjs.min.js"
# The @stomp/stompjs browser bundle the demo page loads (static/package.json too).
STOMP_CLIENT_FILE = Path(__file__).resolve().parents[1] / "static/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js"
STOMP_CLIENT_PATH = "/static/stomp.umd.min.js"


def build_chat_server(settings: Settings) -> ChatServer:
    """The chat server of one process: transport, domain and web app."""
    registry: SubscriptionRegistry = SubscriptionRegistry()
    delivery = FanoutDelivery(registry)
    return serve_chat_domain(settings, build_chat_domain(settings, delivery), registry=registry, delivery=delivery)


def serve_chat_domain(settings: Settings, domain: ChatDomain, *, registry: SubscriptionRegistry,
                      delivery: FanoutDelivery) -> ChatServer:
    """The transport and the web app around ``domain``, whose pushes go to ``delivery``."""
    hub = SessionHub(settings, domain.application, TokenVerifier(settings.jwt_secret), registry,
                     settings.effective_node_id, delivering=domain.delivering)
    client_url, client_blueprints = sockjs_client(settings)
    endpoint = SockJSEndpoint(hub, prefix=STOMP_PREFIX, options=_sockjs_options(settings, hub.close_grace_s, client_url))
    flask_app = create_flask_app(settings, endpoint=endpoint, blueprints=[*domain.blueprints, *client_blueprints],
                                 readiness=domain.readiness, info=domain.info)
    gate = ConnectionGate(header_timeout_s=settings.header_timeout_s, max_connections=settings.worker_connections,
                          reserve=settings.health_reserve, body_idle_timeout_s=settings.body_idle_timeout_s)
    return ChatServer(domain=domain, hub=hub, delivery=delivery, endpoint=endpoint, flask_app=flask_app,
                      connection_gate=gate)


def build_chat_domain(settings: Settings, delivery: LocalDelivery) -> ChatDomain:
    """The chat application of one process, its HTTP API and background work; pushes go to ``delivery``."""
    mongo = MongoConnection(settings)
    read_side = MongoReadSide(mongo.db)
    cache = RedisMembershipCache.from_settings(settings)
    http = ServiceHttp(settings.service_timeout_s)
    membership = Membership(settings, cache, http)
    bus = kafka_bus.KafkaEventBus(settings)
    presence = PresenceClient(settings)
    profiles = Profiles(settings, cache, http)
    writer = MongoMessageWriter(mongo)
    outbox = MongoOutbox(mongo)
    room_log = RoomLog(MongoEventLog(mongo), replay_max_events=settings.resume_max_events,
                       retention_s=settings.event_retention_s)
    memory = RoomMemory()  # filled by the fan-out consumer, read by resumes
    relay = Relay(bus=bus, outbox=outbox, room_log=room_log, messages=writer, max_backlog=settings.outbox_max_backlog,
                  stale_s=settings.outbox_stale_s, retention_s=settings.idempotency_retention_s,
                  ensure_topics=lambda: kafka_bus.create_topics(settings))
    verifier = TokenVerifier(settings.jwt_secret)
    access = Access(membership)
    notifier = Notifier(settings, http=http, presence=presence, membership=membership)
    messaging = Messaging(store=writer, outbox=outbox, relay=relay, room_log=room_log, bus=bus, access=access,
                          authors=Authors(profiles), observer=notifier, typing_interval_s=settings.typing_interval_s)
    flow = PresenceFlow(presence=presence, bus=bus, membership=membership, read_markers=read_side,
                        access=access, node_id=lambda: worker_node_id(settings))
    # The client runs on_recovered in its own greenlet when presence answers again.
    presence.on_recovered = flow.resync
    runtime = WorkerRuntime(
        consumer=_fanout_consumer(settings, delivery, room_log, access.scope.audience, memory),
        lease=LeaseRenewer(flow.renew_lease, settings.node_lease_s / 3),
        background=[MembershipChanges(settings.redis_url, membership.list_changed, membership.forget_all), relay],
        prepare=mongo.ensure_indexes,
        closers=[notifier.stop, bus.close, presence.close, cache.close, mongo.close])
    def backlog() -> int:
        return relay.backlog

    application = ChatService(messaging=messaging, presence=flow, access=access, room_log=room_log, memory=memory,
                              message_max_chars=settings.message_max_chars)
    blueprints = [
        create_blueprint(settings, membership=membership, profiles=profiles, history=read_side,
                         markers=read_side, files=read_side, messaging=messaging, room_log=room_log,
                         verifier=verifier),
        create_service_blueprint(settings, bus=bus, offline=flow),
    ]
    if settings.demo_enabled == "on":
        blueprints.extend(_demo_blueprints(settings, membership, http))
    return ChatDomain(application=application, blueprints=blueprints,
                      readiness={"mongo": mongo.ping, "redis": cache.ping, "kafka": runtime.kafka_ready},
                      info={"outbox_backlog": backlog}, backlog=backlog,
                      delivering=runtime.consumer_positioned, flush=relay.flush,
                      start=runtime.start, stop=runtime.stop)


def create_topics(settings: Settings) -> list[str]:
    """Create Smooth's Kafka topics (idempotent); returns the newly created names."""
    return kafka_bus.create_topics(settings)


def _fanout_consumer(settings: Settings, delivery: LocalDelivery, room_log: RoomLog,
                     audience: Audience, memory: RoomMemory) -> FanoutConsumer:
    group = group_id(FANOUT_GROUP, consumer_instance(worker_node_id(settings)))

    def open_source(resume_from: dict[tuple[str, int], kafka_bus.ReadPosition]) -> kafka_bus.RecordSource:
        return kafka_bus.RecordSource(settings, FANOUT_TOPICS, group, resume_from=resume_from)

    return FanoutConsumer(FANOUT_GROUP, open_source, delivery, sequences=room_log,
                          quiet_check_s=settings.quiet_room_check_s, audience=audience, memory=memory)


def sockjs_client(settings: Settings) -> tuple[str, list[Blueprint]]:
    """The sockjs-client URL ``iframe.html`` loads, and what serves it: ``SOCKJS_CLIENT_URL``, or our own copy."""
    if settings.sockjs_client_url:
        return settings.sockjs_client_url, []
    url, blueprint = local_client_script(SOCKJS_CLIENT_FILE)
    return url, [blueprint]


def _demo_blueprints(settings: Settings, membership: Membership, http: ServiceHttp) -> list[Blueprint]:
    """The browser demo and the @stomp/stompjs copy it loads (only with ``DEMO_ENABLED=on``)."""
    stomp_url, stomp_blueprint = local_client_script(STOMP_CLIENT_FILE, STOMP_CLIENT_PATH)
    presence_url = f"http://{settings.presence_host}:{settings.presence_http_port}/presence-server/friends-state"

    def friends_state(user_ids: list[int]) -> dict[str, str]:
        return http.post_json(presence_url, user_ids)["result"]  # type: ignore[no-any-return]

    demo = create_demo_blueprint(jwt_secret=settings.jwt_secret, memberships=membership,
                                 script_urls=[sockjs_client(settings)[0], stomp_url], friends_state=friends_state)
    return [demo, stomp_blueprint]


def _sockjs_options(settings: Settings, close_grace_s: float, client_url: str) -> SockJSOptions:
    return SockJSOptions(max_frame_bytes=settings.stomp_max_frame_bytes,
                         heartbeat_s=settings.sockjs_heartbeat_s,
                         disconnect_delay_s=settings.sockjs_disconnect_delay_s,
                         streaming_bytes=settings.sockjs_streaming_bytes,
                         close_grace_s=close_grace_s,
                         client_url=client_url,
                         jsonp=settings.sockjs_jsonp == "on",
                         allowed_origins=settings.sockjs_origins or (ANY_ORIGIN,))
