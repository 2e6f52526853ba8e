"""Fixtures' building blocks for the chat HTTP API tests.

- ``ChatApi``: the real blueprint in a Flask app (test client, in process) over the real
  MongoDB-wire server and Redis of the ``embedded`` fixture, with a fresh database.
- ``DocumentWriter``: a minimal message store that inserts through ``mongo_schema`` (the
  messaging engineer's writer is not needed to test the read side).
- ``RecordingBus``: an EventBus that records what was published, or fails on demand.
- ``NoNotifications``: the message observer of the HTTP tests (uploads send none).
- ``CannedService``: a real HTTP server (gevent pywsgi, free port) answering canned JSON,
  standing in for the auth or community service, recording every request.
- ``insert_message``: store a message as the write side would.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Sequence

import gevent
from bson import ObjectId
from flask import Flask
from gevent.pywsgi import WSGIServer
from pymongo import MongoClient

from app.auth import TokenVerifier, mint_token
from app.backends.http_services import ServiceHttp
from app.backends.mongo_history import MongoReadSide
from app.backends.mongo_messages import MongoConnection
from app.backends.mongo_event_log import MongoEventLog
from app.backends.mongo_outbox import MongoOutbox
from app.backends.mongo_schema import COLLECTIONS, ensure_indexes, from_document, object_id, to_document
from app.backends.redis_cache import RedisMembershipCache
from app.chat.access import Access
from app.chat.handlers import Authors, Messaging
from app.chat.http import create_blueprint
from app.chat.membership import Membership
from app.chat.model import ChatMessage
from app.chat.profiles import Profiles
from app.chat.relay import Relay
from app.chat.room_log import RoomLog
from app.destinations import RoomKind
from app.errors import BackendError, BackendUnavailable
from app.http_envelope import register_error_handlers
from app.settings import Settings

__all__ = ["ChatApi", "DocumentWriter", "RecordingBus", "NoNotifications", "CannedService", "insert_message", "fresh_id", "timeline",
           "BASE_TIME"]

BASE_TIME = datetime(2024, 3, 1, 12, 0, 0)
# Room, community and user ids far from other tests' small ones: Redis is shared by the session.
_ids = itertools.count(random.randint(10**8, 9 * 10**8) * 1000)


def fresh_id() -> int:
    return next(_ids)


def insert_message(db: Any, kind: RoomKind, channel_id: int, user_id: int, content: str, at: datetime,
                   **extra: Any) -> ChatMessage:
    message = ChatMessage(kind=kind, channel_id=channel_id, user_id=user_id, content=content, created_at=at,
                          **extra)
    result = db[COLLECTIONS[kind]].insert_one(to_document(message))
    return message.with_id(str(result.inserted_id))


class DocumentWriter:
    """Message store subset (insert, insert_many, get, delete, remove) storing through ``mongo_schema``."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.fail_insert = False

    def insert(self, message: ChatMessage) -> ChatMessage:
        if self.fail_insert:
            raise BackendUnavailable("database unavailable")
        result = self.db[COLLECTIONS[message.kind]].insert_one(to_document(message))
        return message.with_id(str(result.inserted_id))

    def insert_many(self, messages: Sequence[ChatMessage]) -> list[ChatMessage | BackendError]:
        """Each message stored and marked unpublished, as the real writer does."""
        results: list[ChatMessage | BackendError] = []
        for message in messages:
            if self.fail_insert:
                results.append(BackendUnavailable("database unavailable"))
                continue
            document = {"_id": ObjectId(), **to_document(message)}
            self.db.unpublished.insert_one({"_id": document["_id"], "kind": message.kind, "pub": datetime.utcnow()})
            self.db[COLLECTIONS[message.kind]].insert_one(document)
            results.append(message.with_id(str(document["_id"])))
        return results

    def get(self, kind: RoomKind, message_id: str) -> ChatMessage | None:
        doc = self.db[COLLECTIONS[kind]].find_one({"_id": object_id(message_id)})
        return from_document(kind, doc) if doc else None

    def delete(self, kind: RoomKind, message_id: str, author_id: int) -> ChatMessage | None:
        found = self.get(kind, message_id)
        self.db[COLLECTIONS[kind]].delete_one({"_id": ObjectId(message_id), "userId": author_id})
        return found

    def edit(self, *args: Any) -> None:  # pragma: no cover - not used by the HTTP API
        raise NotImplementedError


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes]] = []
        self.fail = False

    def publish(self, topic: str, key: str, value: bytes) -> None:
        if self.fail:
            raise BackendUnavailable("event bus unavailable")
        self.published.append((topic, key, value))

    def publish_nowait(self, topic: str, key: str, value: bytes) -> "_Acked":
        self.publish(topic, key, value)
        return _Acked()


class _Acked:
    def wait(self) -> None:
        return None


class NoNotifications:
    def message_stored(self, message: ChatMessage) -> None:
        return None


class CannedService:
    """A real HTTP server answering ``routes[(method, path)] = (status, json_body)``.

    ``slow_paths`` answer only after ``slow_s`` seconds (to exercise client timeouts).
    """

    def __init__(self, routes: dict[tuple[str, str], tuple[int, Any]] | None = None, *,
                 slow_paths: tuple[str, ...] = (), slow_s: float = 5.0) -> None:
        self.routes = dict(routes or {})
        self.slow_paths = slow_paths
        self.slow_s = slow_s
        self.requests: list[tuple[str, str, Any]] = []
        self._server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None)

    def __enter__(self) -> "CannedService":
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(timeout=1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        self.requests.append((method, path, json.loads(raw) if raw else None))
        if path in self.slow_paths:
            gevent.sleep(self.slow_s)
        status, body = self.routes.get((method, path), (404, {"isSuccess": False, "code": 404, "message": "no"}))
        payload = json.dumps(body, ensure_ascii=False).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


class ChatApi:
    """The blueprint mounted on a Flask app, over real backends; ``close()`` when done."""

    def __init__(self, settings: Settings, *, mongo_listeners: list[Any] | None = None,
                 writer: Any | None = None, connection: MongoConnection | None = None) -> None:
        """``connection``: the one a given ``writer`` marks through (the outbox settles its marks)."""
        self.settings = settings
        self.mongo: MongoClient[Any] = MongoClient(settings.mongo_url, event_listeners=mongo_listeners or [])
        self.db = self.mongo[settings.mongo_db]
        ensure_indexes(self.db)
        self.cache = RedisMembershipCache.from_settings(settings)
        http = ServiceHttp(settings.service_timeout_s)
        self.membership = Membership(settings, self.cache, http)
        self.profiles = Profiles(settings, self.cache, http)
        self.read_side = MongoReadSide(self.db)
        self.writer = writer if writer is not None else DocumentWriter(self.db)
        self.bus = RecordingBus()
        self._own_connection = connection is None
        self.connection = connection if connection is not None else MongoConnection(settings)
        outbox = MongoOutbox(self.connection)
        self.room_log = RoomLog(MongoEventLog(self.connection), replay_max_events=settings.resume_max_events,
                                retention_s=settings.event_retention_s)
        self.relay = Relay(bus=self.bus, outbox=outbox, room_log=self.room_log, messages=self.writer, max_backlog=settings.outbox_max_backlog,
                           stale_s=settings.outbox_stale_s, retention_s=settings.idempotency_retention_s)
        messaging = Messaging(store=self.writer, outbox=outbox, relay=self.relay, room_log=self.room_log, bus=self.bus,
                              access=Access(self.membership), authors=Authors(self.profiles),
                              observer=NoNotifications(), typing_interval_s=settings.typing_interval_s)
        app = Flask(__name__)
        register_error_handlers(app)
        app.register_blueprint(create_blueprint(
            settings, membership=self.membership, profiles=self.profiles, history=self.read_side,
            markers=self.read_side, files=self.read_side, messaging=messaging, room_log=self.room_log,
            verifier=TokenVerifier(settings.jwt_secret)))
        self.client = app.test_client()

    def auth(self, user_id: int, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.settings.jwt_secret, user_id)}", **headers}

    def service(self, **headers: str) -> dict[str, str]:
        """Headers of a service call: the service token when the settings have one (a test
        client calls from loopback, which the default SERVICE_ALLOWED_NETWORKS trusts)."""
        token = {"X-Service-Token": self.settings.service_token} if self.settings.service_token else {}
        return {**token, **headers}

    def delivered(self, timeout_s: float = 5.0) -> None:
        """Wait until the relay published every stored message (the broker must be up)."""
        assert self.relay.flush(timeout_s), f"{self.relay.backlog} messages still unpublished"

    def close(self) -> None:
        self.mongo.drop_database(self.settings.mongo_db)
        self.mongo.close()
        if self._own_connection:
            self.connection.close()
        self.cache.close()


def timeline(count: int, start: datetime = BASE_TIME, step_ms: int = 1000) -> Iterator[datetime]:
    for index in range(count):
        yield start + timedelta(milliseconds=index * step_ms)
