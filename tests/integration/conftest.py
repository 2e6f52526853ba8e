"""Fixtures shared by the integration modules.

- ``application``, ``server_settings``, ``start_server`` and ``server``: the real transport
  around a recording test application (``tests.support.chat.RecordingApplication``) on an
  in-process gevent WSGIServer. A module changes what differs by overriding a fixture:
  ``server_settings`` (the settings overrides every server of the module starts with) or
  ``application`` (another application double).
- ``writer``: the real message writer on the database of a module's own ``api`` fixture.
- ``stack_settings``, ``stack_chat``: a whole node as `make run` starts it (a presence process
  and a gunicorn chat server with the demo on, secured with generated tokens) on the session's
  embedded servers, its own Redis database and a fresh MongoDB database; shared by the demo
  and OpenAPI modules.
"""

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.composition import create_topics
from app.contracts import ChatDomain
from app.embedded import EmbeddedStack
from app.settings import Settings
from tests.conftest import MS, make_settings
from tests.support.chat import (InProcessChatServer, RecordingApplication, RunningChatServer, in_process_chat_server,
                                running_chat_server)
from tests.support.processes import presence_server_process, wait_ready

# The whole node's own Redis database: the demo's fixed ids meet no other suite's.
STACK_REDIS_DB = 13


@pytest.fixture
def application() -> RecordingApplication:
    """The application double the in-process server runs; it records what the transport asked."""
    return RecordingApplication()


@pytest.fixture
def server_settings() -> dict[str, Any]:
    """Settings overrides for every server a test starts: no STOMP heart-beats by default,
    so no test sees a heart-beat it did not ask for, and no SEND rate limit (tests pipeline
    hundreds of SENDs; the limit has tests of its own). Modules override this fixture."""
    return {"heartbeat_ms": 0, "send_rate_limit": 0}


@pytest.fixture
def start_server(application: RecordingApplication,
                 server_settings: dict[str, Any]) -> Iterator[Callable[..., InProcessChatServer]]:
    """``start_server(**overrides) -> InProcessChatServer``, on ``server_settings`` updated with
    ``overrides``; every server started is stopped after the test."""
    with contextlib.ExitStack() as stack:
        def start(**overrides: Any) -> InProcessChatServer:
            settings = Settings.from_env({}, **{**server_settings, **overrides})
            running = stack.enter_context(in_process_chat_server(settings, ChatDomain(application=application)))
            application.delivery = running.chat.delivery
            return running

        yield start


@pytest.fixture
def server(start_server: Callable[..., InProcessChatServer]) -> InProcessChatServer:
    """One in-process server on ``server_settings``."""
    return start_server()


@pytest.fixture
def writer(api) -> Iterator[MongoMessageWriter]:
    """The real message writer on the ``api`` fixture's database: it keeps the room summaries.

    For modules that define ``api`` (a ``tests.support.chat_api.ChatApi``); a module with a
    ``writer`` of its own keeps that one."""
    connection = MongoConnection(api.settings)
    yield MongoMessageWriter(connection)
    connection.close()


@pytest.fixture(scope="session")
def stack_settings(embedded: EmbeddedStack) -> Settings:
    redis_url = embedded.redis_url.rsplit("/", 1)[0] + f"/{STACK_REDIS_DB}"
    settings = make_settings(embedded, redis_url=redis_url, demo_enabled="on", typing_interval_s=1.0)
    settings = settings.with_generated_secrets()
    create_topics(settings)
    return settings


@pytest.fixture(scope="session")
def stack_chat(stack_settings: Settings, log_dir: Path) -> Iterator[RunningChatServer]:
    """Presence and a chat server (demo on), ready; stopped at the end of the session."""
    presence = presence_server_process(stack_settings, log_dir, name="presence-stack").start()
    try:
        with running_chat_server(stack_settings, log_dir, name="chat-stack") as server:
            wait_ready(server.http_url, 90_000 * MS)
            yield server
    finally:
        presence.stop()
