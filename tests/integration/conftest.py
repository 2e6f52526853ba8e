"""Fixtures shared by the integration modules.

- ``application``, ``server_settings``, ``start_server`` and ``server``: the real transport
  around a recording test application (``tests.support.chat.RecordingApplication``) on an
  in-process gevent WSGIServer. A module changes what differs by overriding a fixture:
  ``server_settings`` (the settings overrides every server of the module starts with) or
  ``application`` (another application double).
- ``writer``: the real message writer on the database of a module's own ``api`` fixture.
"""

import contextlib
from typing import Any, Callable, Iterator

import pytest

from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.contracts import ChatDomain
from app.settings import Settings
from tests.support.chat import InProcessChatServer, RecordingApplication, in_process_chat_server


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
