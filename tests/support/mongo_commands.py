"""A pymongo command listener for tests that assert which queries the server was sent."""

from __future__ import annotations

from typing import Any

from pymongo import monitoring

__all__ = ["CommandLog"]


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
