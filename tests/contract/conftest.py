"""Real backends for the contract tests, on the embedded servers of tests/conftest.py.

Each fixture gives a fresh database (MongoDB) or fresh ids (the shared Redis), so runs never
see each other's data. Using ``embedded`` is what marks a run ``integration``.
"""

from typing import Iterator

import pytest

from app.backends.mongo_history import MongoReadSide
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.embedded import EmbeddedStack
from tests.conftest import make_settings


@pytest.fixture
def mongo_connection(embedded: EmbeddedStack) -> Iterator[MongoConnection]:
    """A connection to a fresh database on the embedded MongoDB-wire server."""
    connection = MongoConnection(make_settings(embedded))
    yield connection
    connection.close()


@pytest.fixture
def mongo_writer(mongo_connection: MongoConnection) -> MongoMessageWriter:
    return MongoMessageWriter(mongo_connection)


@pytest.fixture
def mongo_read_side(mongo_connection: MongoConnection) -> MongoReadSide:
    return MongoReadSide(mongo_connection.db)
