"""``/metrics`` of the real servers after real traffic, and their JSON logs.

The chat server runs as `make run` runs it (gunicorn, gunicorn.conf.py) with two workers, so
prometheus_client's multiprocess mode adds the workers up; the presence server runs as its
own process, and the chat workers talk to it. Both log with ``LOG_FORMAT=json``. The scrapes
are parsed with prometheus_client's parser.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.chat.model import TOPICS
from tests.conftest import MS, make_settings
from tests.support.chat import ChatClient, running_chat_server
from tests.support.processes import presence_server_process

WAIT = 10_000 * MS
ROOM = 7301
SENDER, LISTENERS = 71, (72, 73, 74, 75, 76, 77)
MESSAGES = 5
# What this traffic makes every chat family show. In multiprocess mode a labelled family appears
# with its first sample: slow-consumer drops and backend errors do not happen here.
CHAT_FAMILIES = {
    "smooth_stomp_connections", "smooth_stomp_subscriptions", "smooth_stomp_sends", "smooth_stomp_send_reply_seconds",
    "smooth_fanout_records", "smooth_fanout_deliveries", "smooth_fanout_delivery_seconds",
    "smooth_fanout_consumer_lag", "smooth_gap_healed_events", "smooth_gap_duplicate_records", "smooth_outbox_backlog",
    "smooth_backend_call_seconds", "smooth_numbering_rounds",
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def stack(embedded, log_dir):
    settings = make_settings(embedded, chat_workers=2, log_format="json")
    presence = presence_server_process(settings, log_dir, name="presence-metrics").start()
    try:
        with running_chat_server(settings, log_dir, name="chat-metrics") as chat:
            yield settings, chat, presence
    finally:
        presence.stop()


def scrape(url: str) -> tuple[set[str], Samples]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in families for sample in family.samples}
    return {family.name for family in families}, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def eventually(url: str, condition: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``condition`` holds (the gauges are sampled every few seconds, the fan-out is
    asynchronous), and return those samples."""
    samples: Samples = {}
    for _ in range(150):
        samples = scrape(url)[1]
        if condition(samples):
            return samples
        time.sleep(0.1)
    shown = {f"{name}{dict(labels)}": value for (name, labels), value in samples.items()
             if name.startswith("smooth_") and not name.endswith(("_bucket", "_sum"))}
    raise AssertionError(f"not reached; last scrape: {shown}")


def ready_in_a_row(url: str, times: int) -> None:
    """Until ``url`` answered 200 ``times`` in a row (each request reaches whichever worker accepts it)."""
    in_a_row = 0
    for _ in range(600):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                in_a_row = in_a_row + 1 if response.status == 200 else 0
        except urllib.error.HTTPError:
            in_a_row = 0
        if in_a_row >= times:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered 200 {times} times in a row")


def put_members(settings: Any, room: int, members: list[int]) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{settings.chat_http_port}/chat-server/room-user-list/{room}",
                                     data=json.dumps(members).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_chat_metrics_add_up_across_the_workers(stack, token_for):
    settings, chat, _ = stack
    url = chat.http_url + "/metrics"
    put_members(settings, ROOM, [SENDER, *LISTENERS])
    listeners = [ChatClient(chat.ws_url, timeout=WAIT) for _ in LISTENERS]
    sender = ChatClient(chat.ws_url, timeout=WAIT)
    try:
        for client, user in zip(listeners, LISTENERS):
            client.connect(token_for(user))
            client.subscribe(f"/topic/direct/{ROOM}")
        sender.connect(token_for(SENDER))
        ready_in_a_row(chat.http_url + "/readyz", 10)  # both workers' consumers positioned, most likely
        _, before = scrape(url)
        for index in range(MESSAGES):
            sender.send("/kafka/send-direct-message", {"channelId": ROOM, "content": f"hello {index}"})
        refused = sender.send("/kafka/send-direct-message", {"channelId": ROOM}, receipt=False)
        assert refused is None
        sender.wait_for(lambda frame: frame.command == "ERROR")
        for client in listeners:
            for _ in range(MESSAGES):
                client.wait_for(lambda frame: frame.command == "MESSAGE" and b"hello" in frame.body)

        samples = eventually(url, lambda s: total(s, "smooth_stomp_connections") == len(listeners) + 1
                             and total(s, "smooth_stomp_subscriptions") == len(listeners)
                             and total(s, "smooth_fanout_records_total") >= 2 * MESSAGES)
        names, _ = scrape(url)
        assert CHAT_FAMILIES <= names
        direct = "/kafka/send-direct-message"
        assert total(samples, "smooth_stomp_sends_total", destination=direct, outcome="ok") == MESSAGES
        assert total(samples, "smooth_stomp_sends_total", destination=direct, outcome="refused") == 1
        assert total(samples, "smooth_stomp_send_reply_seconds_count", destination=direct) == MESSAGES + 1
        # Every worker reads every record: the sum over both grows by twice what the workers produced.
        def grown(s: Samples, name: str, **labels: str) -> float:
            return total(s, name, **labels) - total(before, name, **labels)

        samples = eventually(url, lambda s: grown(s, "smooth_fanout_records_total")
                             == 2 * grown(s, "smooth_backend_call_seconds_count", backend="kafka", operation="produce")
                             >= 2 * MESSAGES)
        assert total(samples, "smooth_fanout_deliveries_total") >= MESSAGES * len(listeners)
        assert total(samples, "smooth_fanout_delivery_seconds_count") >= MESSAGES
        assert total(samples, "smooth_backend_call_seconds_count", backend="mongo") > 0
        assert total(samples, "smooth_backend_call_seconds_count", backend="redis") > 0
        assert total(samples, "smooth_outbox_backlog") == 0
        # Each partition's lag is known once a fetch answered for it; every topic's soon is.
        eventually(url, lambda s: {dict(labels)["topic"] for name, labels in s if name == "smooth_fanout_consumer_lag"}
                   == set(TOPICS.values()))
    finally:
        for client in [*listeners, sender]:
            client.close()
    eventually(url, lambda s: total(s, "smooth_stomp_connections") == 0)


def test_presence_metrics_count_the_chat_workers_requests(stack, token_for):
    settings, chat, _ = stack
    with ChatClient(chat.ws_url, timeout=WAIT) as client:
        client.connect(token_for(78))
        url = f"http://127.0.0.1:{settings.presence_http_port}/metrics"
        samples = eventually(url, lambda s: total(s, "smooth_presence_requests_total", type="login", outcome="ok") > 0)
    friends = urllib.request.Request(f"http://127.0.0.1:{settings.presence_http_port}/presence-server/friends-state",
                                     data=b"[78]", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(friends, timeout=10) as response:
        assert response.status == 200
    samples = eventually(url, lambda s: total(s, "smooth_presence_requests_total", protocol="http",
                                              type="friends-state", outcome="ok") == 1)
    assert total(samples, "smooth_presence_requests_total", protocol="tcp", type="lease", outcome="ok") > 0
    assert total(samples, "smooth_backend_call_seconds_count", backend="redis") > 0
    names, _ = scrape(url)
    assert "process_cpu_seconds" in names and not any(name.startswith("smooth_stomp") for name in names)


def test_both_servers_write_one_json_object_per_line(stack):
    settings, chat, presence = stack
    with urllib.request.urlopen(chat.http_url + "/healthz", timeout=10) as response:
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-Id"])
    for process in (chat.process, presence):
        lines = [line for line in process.log_path.read_text().splitlines() if line.strip()]
        assert lines, process.name
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"time", "level", "logger", "message", "pid"} <= record.keys() for record in records)
    chat_records = [json.loads(line) for line in chat.process.log_path.read_text().splitlines() if line.strip()]
    # gunicorn's own lines too, from the master and each worker.
    assert any(record["logger"] == "gunicorn.error" for record in chat_records)
    assert len({record["pid"] for record in chat_records}) >= 3
