"""Micro-benchmark of the database's CPU per message on the send path, call by call.

Not a test and not a ``python -m bench`` scenario: it prints figures and never fails on them.

It starts the embedded MongoDB-wire server (``app.embedded.start_mongo``, on disk as ``make
run`` has it) and drives the send path's database calls through Smooth's own backends, in
rounds of ``--per-round`` DM messages to as many rooms (the many-rooms shape), one step at a
time, reading the server process's CPU time (/proc, via psutil) around each step:

- ``number``: the round's sequence numbers (``RoomLog.number``: counters' bulk update + read-back;
  since the tenth session the same update counts the messages into the room summaries);
- ``store``: ``MongoMessageWriter.insert_many`` (the outbox mark, the messages; before the tenth
  session also the summaries);
- ``keep``: the records in the room log (``RoomLog.keep``);
- ``publish``: ``MongoOutbox.published`` once the round is acknowledged.

It prints the server's µs of CPU per message for each step and in all. The server is a pure
Python process sharing the cores with the chat worker in ``bench rooms``, so its cost per
message bounds the SEND rate the embedded stack can carry. Compare revisions by running it in
a checkout of each::

    .venv/bin/python -m bench.db_micro --rounds 300 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Callable

import psutil

from app.backends.mongo_event_log import MongoEventLog
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.backends.mongo_outbox import MongoOutbox
from app.chat.model import ChatMessage
from app.chat.room_log import RoomLog
from app.embedded import start_mongo
from app.settings import Settings

ROOMS = 2500  # as in `bench rooms`
STEPS = ("number", "store", "keep", "publish")


def run_once(rounds: int, per_round: int) -> dict[str, float]:
    """Server µs of CPU per message for each step (and ``total``), over one fresh server."""
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_mongo(Path(data_dir))
        try:
            return _measure(server.url, psutil.Process(server.process.pid), rounds, per_round)
        finally:
            server.stop()


def _measure(url: str, server: psutil.Process, rounds: int, per_round: int) -> dict[str, float]:
    settings = Settings.from_env({}, mongo_url=url, mongo_db="db_micro")
    connection = MongoConnection(settings)
    connection.ensure_indexes()
    writer, outbox = MongoMessageWriter(connection), MongoOutbox(connection)
    room_log = RoomLog(MongoEventLog(connection), replay_max_events=settings.resume_max_events,
                       retention_s=settings.event_retention_s)
    spent = dict.fromkeys(STEPS, 0.0)

    def step(name: str, call: Callable[[], object]) -> object:
        before = _cpu(server)
        result = call()
        spent[name] += _cpu(server) - before
        return result

    try:
        for round_number in range(rounds):
            first_room = round_number * per_round
            messages = [ChatMessage(kind="direct", channel_id=(first_room + i) % ROOMS + 1, user_id=1,
                                    content="x" * 64, created_at=datetime.utcnow(), name="bench")
                        for i in range(per_round)]
            numbered = step("number", lambda: room_log.number(messages))
            stored = step("store", lambda: writer.insert_many(numbered))
            kept = [message for message in stored if isinstance(message, ChatMessage)]
            step("keep", lambda: room_log.keep(kept))
            step("publish", lambda: outbox.published([(message.kind, message.id) for message in kept]))
    finally:
        connection.close()
    messages_total = rounds * per_round
    figures = {name: 1e6 * seconds / messages_total for name, seconds in spent.items()}
    figures["total"] = sum(figures.values())
    return figures


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.db_micro", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="group-commit rounds per run")
    parser.add_argument("--per-round", type=int, default=10, help="messages (and rooms) per round")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh server; medians printed")
    args = parser.parse_args(argv)
    runs = [run_once(args.rounds, args.per_round) for _ in range(args.repeat)]
    print(f"database server CPU per message, us ({args.repeat} run(s) of {args.rounds} rounds x "
          f"{args.per_round} messages; median)")
    for name in (*STEPS, "total"):
        print(f"  {name:8s} {statistics.median(run[name] for run in runs):8.1f}")


if __name__ == "__main__":
    main()
