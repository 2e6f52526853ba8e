"""A pymongo command listener for tests that assert which queries the server was sent."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient, monitoring

from app.backends.mongo_marks import UnpublishedMarks
from app.backends.mongo_messages import WRITE_CONCERNS
from app.backends.mongo_schema import UNPUBLISHED, ensure_indexes
from app.settings import Settings

__all__ = ["CommandLog", "ListenedConnection"]


class CommandLog(monitoring.CommandListener):
    """Every command sent, in order: ``(name, target)`` pairs and the whole documents."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, Any]] = []
        self.documents: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append((event.command_name, event.command.get(event.command_name)))
        self.documents.append(dict(event.command))

    def clear(self) -> None:
        self.commands.clear()
        self.documents.clear()

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every ``name`` command (find, aggregate, ...), whatever its collection."""
        return [doc for (command, _), doc in zip(self.commands, self.documents) if command == name]

    def on_messages(self, name: str) -> list[dict[str, Any]]:
        """The ``name`` commands (find, aggregate) sent to the DM message collection."""
        return self.on(name, "directMessage")

    def on(self, name: str, collection: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc.get(name) == collection]

    def reads_of_messages(self) -> list[dict[str, Any]]:
        return [doc for name in ("find", "aggregate", "distinct", "count") for doc in self.on_messages(name)]

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


class ListenedConnection:
    """What MongoMessageWriter uses of a MongoConnection, over a client that logs commands."""

    def __init__(self, settings: Settings, listener: monitoring.CommandListener) -> None:
        self.client = MongoClient(settings.mongo_url, event_listeners=[listener])
        self.db = self.client[settings.mongo_db]
        self._write_concern = WRITE_CONCERNS[settings.mongo_write_concern]
        self.marks = UnpublishedMarks(self.durable(UNPUBLISHED), guarded=lambda call: call())

    def durable(self, name: str) -> Any:
        return self.db.get_collection(name, write_concern=self._write_concern)

    def ensure_indexes(self) -> None:
        ensure_indexes(self.db)

    def ensure_indexes_before_write(self) -> None:
        self.ensure_indexes()
