"""``python -m app``: the operator's commands, run as an operator runs them (a child process with
the settings in its environment), against the embedded servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.backends.kafka_bus import create_topics
from app.backends.mongo_messages import MongoConnection
from app.chat.model import TOPICS
from app.embedded import free_port, start_kafka
from app.settings import Settings
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]


def run_app(settings: Settings | None, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", **(settings.as_environ() if settings else {})}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def prepared(embedded):
    """Settings whose topics and indexes exist, as after a chat worker started once."""
    settings = make_settings(embedded)
    create_topics(settings)
    mongo = MongoConnection(settings)
    try:
        mongo.ensure_indexes()
    finally:
        mongo.close()
    return settings


def test_help_lists_every_command():
    result = run_app(None, "--help")
    assert result.returncode == 0
    for command in ("check", "token", "service-token", "rebuild-summaries", "devstack", "settings"):
        assert command in result.stdout


def test_check_passes_on_servers_that_have_everything(prepared):
    result = run_app(prepared, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "ready"
    assert not [line for line in lines if line.startswith("FAIL")]
    # Each topic found (ok, or warn: the shared test broker may hold one that another test
    # created with another partition count, which check only warns about).
    topic_lines = [line for line in lines if line.split()[:3] in (["ok", "kafka", "topic"], ["warn", "kafka", "topic"])]
    assert sorted(line.split()[3].rstrip(":") for line in topic_lines) == sorted(TOPICS.values())
    assert "ok   mongodb  every index is there" in lines


def test_check_fails_clearly_on_a_dead_port(embedded):
    dead = free_port()
    settings = make_settings(embedded, kafka_bootstrap_servers=f"127.0.0.1:{dead}",
                             mongo_url=f"mongodb://127.0.0.1:{dead}/", redis_url=f"redis://127.0.0.1:{dead}/0")
    result = run_app(settings, "check")
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failures] == ["kafka", "mongodb", "redis"]
    assert all("unreachable" in line for line in failures)
    assert "Traceback" not in result.stderr


def test_check_names_a_missing_topic_and_missing_indexes(embedded, tmp_path):
    broker = start_kafka(tmp_path)  # a broker of its own: one topic is left out
    try:
        settings = make_settings(embedded, kafka_bootstrap_servers=broker.url)
        missing = TOPICS["file"]
        create_topics(settings, [topic for topic in TOPICS.values() if topic != missing])
        result = run_app(settings, "check")  # and a fresh database: no index yet
    finally:
        broker.stop()
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failures[0] == f"FAIL kafka    topic {missing} is missing (a chat worker creates it with " \
                          f"KAFKA_PARTITIONS={settings.kafka_partitions})"
    assert failures[1].startswith("FAIL mongodb  missing indexes: directMessage.channel_time")


def test_rebuild_summaries_shows_progress_then_its_report(prepared):
    result = run_app(prepared, "rebuild-summaries")
    assert result.returncode == 0, result.stderr
    assert "direct: counting the messages of directMessage" in result.stderr
    assert "channel: 0 rooms with messages" in result.stderr
    report = json.loads(result.stdout)
    assert report["direct"]["rooms"] == 0 and "seconds" in report


def test_token_mints_what_the_server_accepts():
    from app.auth import TokenVerifier

    result = run_app(Settings(), "token", "--user", "5")
    assert result.returncode == 0
    assert TokenVerifier(Settings().jwt_secret).verify(result.stdout.strip()).user_id == 5
