"""Fixtures shared by integration modules that build on a module's own ``api`` fixture."""

from typing import Iterator

import pytest

from app.backends.mongo_messages import MongoConnection, MongoMessageWriter


@pytest.fixture
def writer(api) -> Iterator[MongoMessageWriter]:
    """The real message writer on the ``api`` fixture's database: it keeps the room summaries.

    For modules that define ``api`` (a ``tests.support.chat_api.ChatApi``); a module with a
    ``writer`` of its own keeps that one."""
    connection = MongoConnection(api.settings)
    yield MongoMessageWriter(connection)
    connection.close()
