"""`make run` (python -m app.devstack): starts everything, serves, and leaves nothing behind.

The launcher runs as a child of the test with free ports and a temporary data directory,
starting its own embedded servers. The tests list its descendants with psutil while it
runs, then stop it (SIGTERM, or by killing one of its children) and check that every one
of those processes is gone.
"""

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import psutil

from app.devstack import read_secrets, secrets_path
from app.embedded import free_port
from app.settings import Settings
from tests.conftest import MS
from tests.support.chat import ChatClient
from tests.support.processes import REPO, wait_ready

READY_TIMEOUT_S = 120_000 * MS
EXIT_TIMEOUT_S = 60


@contextlib.contextmanager
def devstack(tmp_path):
    """Run the launcher; yields (process, settings). Killed for good at the end."""
    settings = Settings.from_env({}, chat_http_port=free_port(), presence_tcp_port=free_port(),
                                 presence_http_port=free_port(), data_dir=str(tmp_path / "var"))
    environ = {name: value for name, value in settings.child_environ().items()
               if name not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "MONGO_URL", "PRESENCE_REDIS_URL")}
    log = open(tmp_path / "devstack.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "app.devstack"], cwd=REPO, env=environ,
                               stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield process, settings
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        process.stdout.close()
        log.close()


def wait_devstack_ready(settings, process, tmp_path):
    def check_alive():
        if process.poll() is not None:
            raise AssertionError(f"devstack exited with {process.returncode}:\n"
                                 f"{(tmp_path / 'devstack.log').read_text(errors='replace')[-4000:]}")

    return wait_ready(f"http://127.0.0.1:{settings.chat_http_port}", READY_TIMEOUT_S, check_alive=check_alive)


def descendants(process):
    return psutil.Process(process.pid).children(recursive=True)


def command_lines(processes):
    lines = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            lines.append(" ".join(proc.cmdline()))
    return lines


def assert_all_gone(processes):
    gone, alive = psutil.wait_procs(processes, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], command_lines(alive)


def test_devstack_serves_then_sigterm_leaves_no_process(tmp_path, token_for):
    with devstack(tmp_path) as (process, settings):
        ready = wait_devstack_ready(settings, process, tmp_path)
        assert ready["status"] == "ready"
        banner = process.stdout.read1(65536).decode()
        assert f"ws://127.0.0.1:{settings.chat_http_port}/my-chat/websocket" in banner
        assert "make token USER=5" in banner
        children = descendants(process)
        lines = " | ".join(command_lines(children))
        for expected in ("redis-server", "secantusd", "broker", "app.tcp_presence", "gunicorn"):
            assert expected in lines, lines
        with ChatClient(f"ws://127.0.0.1:{settings.chat_http_port}/my-chat/websocket", timeout=10) as client:
            client.connect(token_for(5))
            assert client.disconnect().command == "RECEIPT"
        assert_secure_as_started(settings, token_for)
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT_S) == 0
        assert_all_gone(children)
        assert not secrets_path(settings).exists()


def put_members(settings, room, headers):
    request = urllib.request.Request(f"http://127.0.0.1:{settings.chat_http_port}/chat-server/room-user-list/{room}",
                                     data=json.dumps([5]).encode(), method="PUT",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def assert_secure_as_started(settings, token_for):
    """Issue 14: the stack `make run` starts has a service token; loopback alone is not enough."""
    assert stat.S_IMODE(secrets_path(settings).stat().st_mode) == 0o600
    tokens = read_secrets(settings)
    assert len(tokens["SERVICE_TOKEN"]) >= 32 and len(tokens["PRESENCE_TOKEN"]) >= 32
    assert put_members(settings, 17, {}) == 401
    assert put_members(settings, 17, {"Authorization": token_for(5)}) == 403
    assert put_members(settings, 17, {"X-Service-Token": tokens["SERVICE_TOKEN"]}) == 200
    printed = subprocess.run([sys.executable, "-m", "app.devstack", "service-token"], cwd=REPO, capture_output=True,
                             env={**os.environ, "SMOOTH_DATA_DIR": settings.data_dir,
                                  "CHAT_HTTP_PORT": str(settings.chat_http_port)}, timeout=60)
    assert printed.stdout.decode().strip() == tokens["SERVICE_TOKEN"]


def test_devstack_stops_everything_when_a_child_dies(tmp_path):
    with devstack(tmp_path) as (process, settings):
        wait_devstack_ready(settings, process, tmp_path)
        children = descendants(process)
        (presence,) = [p for p in children if "app.tcp_presence" in " ".join(p.cmdline())]
        presence.kill()
        assert process.wait(EXIT_TIMEOUT_S) == 1
        assert_all_gone(children)
