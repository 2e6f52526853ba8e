"""The embedded stack: real servers start on free ports and nothing is left behind."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pymongo
import redis

from app.embedded import EmbeddedStack, start_redis


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stack_starts_real_servers_and_stops_them(tmp_path):
    stack = EmbeddedStack(tmp_path, mongo_in_memory=True)
    with stack.running():
        pids = [server.process.pid for server in stack.servers]
        assert redis.Redis.from_url(stack.redis_url).ping()
        assert pymongo.MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000).admin.command("ping")["ok"] == 1
        assert stack.kafka_bootstrap.startswith("127.0.0.1:")
    assert all(_gone(pid) for pid in pids)


def test_configured_urls_are_used_and_nothing_of_that_kind_is_started(tmp_path, embedded):
    stack = EmbeddedStack(tmp_path, redis_url=embedded.redis_url, kafka_bootstrap=embedded.kafka_bootstrap,
                          mongo_url=embedded.mongo_url)
    with stack.running():
        assert stack.servers == []
        assert stack.redis_url == embedded.redis_url


def test_data_lives_under_the_data_dir(tmp_path):
    server = start_redis(tmp_path)
    try:
        assert (tmp_path / "redis").is_dir()
        assert (tmp_path / "logs" / "redis.log").exists()
    finally:
        server.stop()


def test_servers_die_with_a_launcher_that_is_killed(tmp_path):
    script = (
        "import sys, time; from pathlib import Path; from app.embedded import start_redis;"
        "s = start_redis(Path(sys.argv[1])); print(s.process.pid, flush=True); time.sleep(60)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    child_pid = int(launcher.stdout.readline())
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(10)
    deadline = time.monotonic() + 10
    while not _gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child_pid)
