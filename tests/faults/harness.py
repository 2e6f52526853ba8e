"""The fault suite's harness: a whole stack of real processes, steady chat traffic, and a ledger.

``FaultStack`` runs Redis, the Kafka-protocol broker, the MongoDB-wire server (on disk, so a
restart keeps what it stored), the presence server and gunicorn (two workers), each on a
fixed port of its own so that it can be killed, stopped or restarted in place.

``Traffic`` drives ``rooms`` rooms, each with one sender and three subscribers, as real
clients over raw WebSockets in greenlets. Senders SEND with receipts at a steady pace;
subscribers record every MESSAGE. Clients whose connection ends reconnect on their own, as
apps do, and resubscribe with ``since-seq`` (the last number they got), so they are owed
everything sent after their first subscription, across any number of reconnects.

``Ledger`` is what was acknowledged, refused, stored and delivered, and judges it:

- every RECEIPTed message is stored, and reaches every subscriber that subscribed before its
  SEND exactly once, whatever reconnects came between (``undelivered``, ``duplicated``);
- no resume was answered with a reset (``resets``: the history was always replayable);
- nothing answered with ERROR is ever delivered (``ghosts``);
- no SEND on a connection that stayed open went unanswered (``unanswered``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gevent
import psutil
from pymongo import MongoClient

from app.auth import mint_token
from app.embedded import EmbeddedServer, free_port, start_kafka, start_mongo, start_redis
from app.settings import Settings
from tests.support.chat import ChatClient, StompError, endpoint_urls
from tests.support.processes import ServiceProcess, chat_server_process, presence_server_process, wait_ready
from tests.support.rooms import set_room_members

__all__ = ["FaultStack", "Traffic", "Ledger", "Verdict"]

SUBSCRIBERS_PER_ROOM = 3
RECONNECT_PAUSE_S = 0.2
ANSWER_TIMEOUT_S = 30.0
_IDS = itertools.count(random.randrange(10**6, 10**8) * 1000)


class FaultStack:
    """Every process of one Smooth node and its backends, each restartable on its own port."""

    def __init__(self, data_dir: Path, log_dir: Path, **overrides: Any) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.ports = {name: free_port() for name in ("redis", "kafka", "mongo")}
        self.backends: dict[str, EmbeddedServer] = {}
        self.settings = Settings.from_env({}, **{
            "bind_host": "127.0.0.1", "chat_http_port": free_port(), "presence_tcp_port": free_port(),
            "presence_http_port": free_port(), "chat_workers": 2, "heartbeat_ms": 0,
            "kafka_bootstrap_servers": f"127.0.0.1:{self.ports['kafka']}",
            "mongo_url": f"mongodb://127.0.0.1:{self.ports['mongo']}/", "mongo_db": "faults",
            "redis_url": f"redis://127.0.0.1:{self.ports['redis']}/0", "data_dir": str(data_dir),
            "outbox_stale_s": 3.0, "kafka_send_timeout_s": 2.0,
            "send_rate_limit": 0,  # one sender per room SENDs 5/s for minutes: never throttled here
            **overrides})
        self.presence: ServiceProcess | None = None
        self.chat: ServiceProcess | None = None
        self.http_url, self.ws_url, _ = endpoint_urls(self.settings.chat_http_port)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "FaultStack":
        for name in ("redis", "kafka", "mongo"):
            self.start_backend(name)
        from app.composition import create_topics

        create_topics(self.settings)
        self.presence = presence_server_process(self.settings, self.log_dir, "presence").start()
        self.start_chat()
        return self

    def start_backend(self, name: str) -> None:
        starters = {"redis": start_redis, "kafka": start_kafka, "mongo": start_mongo}
        self.backends[name] = starters[name](self.data_dir, self.ports[name])

    def start_chat(self) -> None:
        self.chat = chat_server_process(self.settings, self.log_dir, "chat").start()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60.0) -> Any:
        return wait_ready(self.http_url, timeout_s, check_alive=self._check_chat_alive)

    def _check_chat_alive(self) -> None:
        if self.chat is None or not self.chat.alive:
            raise AssertionError(f"chat server died; log:\n{self.chat.log_tail() if self.chat else ''}")

    def stop(self) -> None:
        for process in (self.chat, self.presence):
            if process is not None:
                process.stop()
        for server in reversed(list(self.backends.values())):
            server.stop()

    # -- faults -----------------------------------------------------------------------------------

    def kill_backend(self, name: str) -> None:
        """SIGKILL a backend (its whole process group), as a crash would."""
        server = self.backends[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)

    def pause_backend(self, name: str) -> None:
        os.killpg(self.backends[name].process.pid, signal.SIGSTOP)

    def resume_backend(self, name: str) -> None:
        os.killpg(self.backends[name].process.pid, signal.SIGCONT)

    def kill_presence(self) -> None:
        assert self.presence is not None
        self.presence.kill()

    def kill_one_worker(self) -> int:
        """SIGKILL one gunicorn worker; the master starts another. Returns the killed pid."""
        assert self.chat is not None and self.chat.process is not None
        workers = psutil.Process(self.chat.process.pid).children()
        victim = workers[0].pid
        os.kill(victim, signal.SIGKILL)
        return victim

    def restart_node(self) -> None:
        """SIGTERM the chat node (master and workers), then start it again, as a deploy does."""
        assert self.chat is not None
        self.chat.stop(timeout=30)
        self.start_chat()

    def mongo(self) -> MongoClient[dict[str, Any]]:
        return MongoClient(self.settings.mongo_url, serverSelectionTimeoutMS=5000)

    def token(self, user_id: int) -> str:
        return mint_token(self.settings.jwt_secret, user_id)

    @contextlib.contextmanager
    def running(self) -> Iterator["FaultStack"]:
        try:
            yield self.start()
        finally:
            self.stop()


# -- the ledger -------------------------------------------------------------------------------------


@dataclass
class Epoch:
    """One subscription of one subscriber: from its RECEIPT until its connection ended (or not)."""

    started: float
    ended: float | None = None
    received: list[str] = field(default_factory=list)


@dataclass
class Sent:
    room: int
    started: float
    answer: str | None = None  # "RECEIPT", "ERROR <message>", "closed" (connection ended unanswered)
    message_id: str | None = None


@dataclass
class Verdict:
    acknowledged: int
    refused: int
    stored_missing: int
    undelivered: int
    duplicated: int
    ghosts: int
    unanswered: int
    expected_deliveries: int
    resets: int = 0

    def row(self, case: str) -> str:
        return (f"| {case} | {self.acknowledged} | {self.refused} | {self.stored_missing} | "
                f"{self.expected_deliveries} | {self.undelivered} | {self.duplicated} | {self.ghosts} | "
                f"{self.unanswered} | {self.resets} |")


class Ledger:
    """What the traffic sent, what was answered and what each subscription received."""

    def __init__(self) -> None:
        self.sent: dict[str, Sent] = {}
        self.epochs: dict[tuple[int, int], list[Epoch]] = {}
        self.resets = 0

    def received(self, subscriber: tuple[int, int]) -> list[str]:
        """Everything one subscriber got, over all its subscriptions."""
        return [token for epoch in self.epochs.get(subscriber, ()) for token in epoch.received]

    def expected(self) -> list[tuple[str, tuple[int, int]]]:
        """(token, subscriber) for every delivery owed: RECEIPTed, to a subscriber whose first
        subscription came before the SEND (it resumes across reconnects)."""
        owed = []
        for token, sent in self.sent.items():
            if sent.answer != "RECEIPT":
                continue
            owed += [(token, subscriber) for subscriber, epochs in self.epochs.items()
                     if subscriber[0] == sent.room and epochs and epochs[0].started < sent.started]
        return owed

    def undelivered_sent_after(self, moment: float) -> int:
        """Owed deliveries missing whose SEND started after ``moment``."""
        got = {subscriber: set(self.received(subscriber)) for subscriber in self.epochs}
        return sum(1 for token, subscriber in self.expected()
                   if token not in got[subscriber] and self.sent[token].started > moment)

    def missing(self) -> int:
        got = {subscriber: set(self.received(subscriber)) for subscriber in self.epochs}
        return sum(1 for token, subscriber in self.expected() if token not in got[subscriber])

    def verdict(self, stored_tokens: set[str]) -> Verdict:
        acknowledged = {token for token, sent in self.sent.items() if sent.answer == "RECEIPT"}
        refused = {token for token, sent in self.sent.items() if (sent.answer or "").startswith("ERROR")}
        received = {subscriber: self.received(subscriber) for subscriber in self.epochs}
        received_anywhere = {token for tokens in received.values() for token in tokens}
        duplicated = sum(len(tokens) - len(set(tokens)) for tokens in received.values())
        expected = self.expected()
        return Verdict(
            acknowledged=len(acknowledged), refused=len(refused),
            stored_missing=len(acknowledged - stored_tokens),
            undelivered=sum(1 for token, subscriber in expected if token not in set(received[subscriber])),
            duplicated=duplicated, ghosts=len(refused & received_anywhere),
            unanswered=sum(1 for sent in self.sent.values() if sent.answer is None),
            expected_deliveries=len(expected), resets=self.resets)


# -- the traffic --------------------------------------------------------------------------------------


class Traffic:
    """Senders and subscribers over ``rooms`` DM rooms, feeding a :class:`Ledger`."""

    def __init__(self, stack: FaultStack, *, rooms: int = 10, sends_per_room_s: float = 5.0) -> None:
        self.stack = stack
        self.ledger = Ledger()
        self.interval_s = 1.0 / sends_per_room_s
        self.rooms = []
        for _ in range(rooms):
            room, sender = next(_IDS), next(_IDS)
            subscribers = [next(_IDS) for _ in range(SUBSCRIBERS_PER_ROOM)]
            set_room_members(stack.settings.redis_url, room, [sender, *subscribers])
            self.rooms.append((room, sender, subscribers))
        self._sending = False
        self._stopping = False
        self._greenlets: list[gevent.Greenlet] = []
        self.disconnects: list[str] = []  # why each client connection ended, for the report

    def reseed_membership(self) -> None:
        """Put the member lists back (a restarted Redis lost them; the community service would)."""
        for room, sender, subscribers in self.rooms:
            set_room_members(self.stack.settings.redis_url, room, [sender, *subscribers])

    def start(self) -> None:
        for room, sender, subscribers in self.rooms:
            for index, user in enumerate(subscribers):
                self._greenlets.append(gevent.spawn(self._subscribe_forever, room, index, user))
        self.wait_subscribed()
        self._sending = True
        for room, sender, _ in self.rooms:
            self._greenlets.append(gevent.spawn(self._send_forever, room, sender))

    def wait_subscribed(self, timeout_s: float = 60.0) -> None:
        """Until every subscriber holds a live subscription."""
        deadline = time.monotonic() + timeout_s
        total = len(self.rooms) * SUBSCRIBERS_PER_ROOM
        while sum(1 for epochs in self.ledger.epochs.values() if epochs and epochs[-1].ended is None) < total:
            assert time.monotonic() < deadline, f"subscribers did not (re)subscribe in time: {self.disconnects[-5:]}"
            gevent.sleep(0.05)

    def stop_sending(self) -> None:
        self._sending = False

    def drain(self, timeout_s: float = 60.0) -> None:
        """Wait until every owed delivery arrived, or ``timeout_s``; then stop every client."""
        deadline = time.monotonic() + timeout_s
        while any(sent.answer is None for sent in self.ledger.sent.values()) and time.monotonic() < deadline:
            gevent.sleep(0.1)
        while self.ledger.missing() and time.monotonic() < deadline:
            gevent.sleep(0.2)
        self._stopping = True
        gevent.killall(self._greenlets, timeout=5)

    # -- clients ----------------------------------------------------------------------------------

    def _client(self, user: int) -> ChatClient:
        client = ChatClient(self.stack.ws_url, timeout=ANSWER_TIMEOUT_S)
        client.connect(self.stack.token(user))
        return client

    def _subscribe_forever(self, room: int, index: int, user: int) -> None:
        epochs = self.ledger.epochs.setdefault((room, index), [])
        last_seq: int | None = None  # what an app keeps: the highest number it got in the room
        while not self._stopping:
            epoch = None
            try:
                with self._client(user) as client:
                    resume = {"since-seq": str(last_seq)} if last_seq is not None else {}
                    client.subscribe(f"/topic/direct/{room}", headers=resume)
                    epoch = Epoch(started=time.monotonic())
                    epochs.append(epoch)
                    while not self._stopping:
                        frame = client.receive_frame(timeout=3600)
                        if frame.command == "MESSAGE":
                            body = json.loads(frame.body)
                            if body.get("seq") is not None:  # not the members' connect/disconnect
                                last_seq = max(last_seq or 0, body["seq"])
                            if body.get("type") == "message":
                                epoch.received.append(body["message"])
                            elif body.get("type") == "reset":
                                self.ledger.resets += 1
                        elif frame.command == "ERROR":
                            break
            except Exception as exc:  # noqa: BLE001 - the connection ended (or never came): reconnect
                self.disconnects.append(f"subscriber {user}: {type(exc).__name__}: {exc}")
            if epoch is not None and not self._stopping:
                epoch.ended = time.monotonic()
            gevent.sleep(RECONNECT_PAUSE_S)

    def _send_forever(self, room: int, user: int) -> None:
        while self._sending:
            try:
                with self._client(user) as client:
                    self._send_on(client, room)
            except Exception as exc:  # noqa: BLE001 - the connection ended: reconnect
                self.disconnects.append(f"sender {user}: {type(exc).__name__}: {exc}")
            gevent.sleep(RECONNECT_PAUSE_S)

    def _send_on(self, client: ChatClient, room: int) -> None:
        while self._sending:
            token = f"m-{room}-{next(_IDS)}"
            sent = self.ledger.sent[token] = Sent(room=room, started=time.monotonic())
            try:
                receipt = client.send("/kafka/send-direct-message", {"channelId": room, "content": token})
                sent.answer, sent.message_id = "RECEIPT", receipt.header("message-id")
            except StompError as refused:
                if refused.frame.header("receipt-id") is None:  # the server closed the connection
                    sent.answer = "closed"
                    return
                sent.answer = f"ERROR {refused.message}"
            except TimeoutError:
                return  # unanswered on an open connection: stays None
            except Exception:  # noqa: BLE001 - the connection broke before an answer
                sent.answer = "closed"
                raise
            gevent.sleep(self.interval_s)


def stored_tokens(stack: FaultStack) -> set[str]:
    with contextlib.closing(stack.mongo()) as client:
        return {doc["content"] for doc in client[stack.settings.mongo_db].directMessage.find({}, {"content": 1})}


def wait_healthy(stack: FaultStack, user_ids: tuple[int, int]) -> None:
    """/readyz answers 200 and a new SEND reaches a new subscriber."""
    stack.wait_ready()
    room = next(_IDS)
    set_room_members(stack.settings.redis_url, room, list(user_ids))
    with ChatClient(stack.ws_url, timeout=15) as sender, ChatClient(stack.ws_url, timeout=15) as receiver:
        sender.connect(stack.token(user_ids[0]))
        receiver.connect(stack.token(user_ids[1]))
        receiver.subscribe(f"/topic/direct/{room}")
        sender.send("/kafka/send-direct-message", {"channelId": room, "content": "healthy"})
        pushed = receiver.wait_for(lambda frame: frame.command == "MESSAGE"
                                   and json.loads(frame.body).get("type") == "message", timeout=15)
        assert json.loads(pushed.body)["message"] == "healthy"
