"""``make run`` (``python -m app.devstack``): the whole system on one machine, supervised.

Starts, in order: the embedded Redis, Kafka-protocol broker and MongoDB-wire server (only
those whose URL is not configured; see app/embedded.py), Smooth's Kafka topics, the
presence server (``python -m app.tcp_presence``) and the chat server (gunicorn with
gunicorn.conf.py). Children get the computed environment (the settings plus the embedded
URLs), their own process group and a parent-death signal.

Then it prints where everything listens and supervises: if any child exits, everything is
stopped and the exit status is 1. SIGTERM or Ctrl-C stops everything (chat, presence,
then the embedded servers) and exits 0; no process is left behind.

The embedded servers keep their data in ``<SMOOTH_DATA_DIR>/stack-<CHAT_HTTP_PORT>``, so
two stacks started with different ports run side by side (they always take free ports).

Secure as started: unless ``SERVICE_TOKEN`` and ``PRESENCE_TOKEN`` are set, a random one of
each is generated for this run and given to presence and chat (so service endpoints and
presence's node requests are closed to everyone else), and written, readable by the owner
only, to ``<stack dir>/secrets.env`` for the dev tools (``make service-token``, curl).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from app.embedded import EmbeddedStack, child_process_guard, wait_for_port
from app.logs import configure_logging
from app.settings import Settings

__all__ = ["main", "Child", "stack_data_dir", "secrets_path", "write_secrets", "read_secrets"]

log = logging.getLogger("smooth.devstack")

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0  # longer than gunicorn's graceful_timeout
POLL_S = 0.5


class Stop(Exception):
    """SIGTERM or SIGINT arrived: stop everything and exit 0."""


@dataclasses.dataclass
class Child:
    """One supervised child process (its own process group)."""

    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, then SIGKILL it after ``timeout``."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", self.name, timeout)
        _signal_group(self.process.pid, signal.SIGKILL)  # whatever is left of its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def stack_data_dir(settings: Settings) -> Path:
    """Where this stack's embedded servers keep data and logs."""
    return Path(settings.data_dir) / f"stack-{settings.chat_http_port}"


def secrets_path(settings: Settings) -> Path:
    """Where a running stack's generated tokens are kept for the dev tools."""
    return stack_data_dir(settings) / "secrets.env"


def write_secrets(settings: Settings) -> Path:
    """Write the service and presence tokens as ``KEY=value`` lines, mode 0600."""
    path = secrets_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older file may have been created wider
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(f"SERVICE_TOKEN={settings.service_token}\nPRESENCE_TOKEN={settings.presence_token}\n")
    return path


def read_secrets(settings: Settings) -> dict[str, str]:
    """The tokens a running stack wrote (empty when none is running)."""
    try:
        text = secrets_path(settings).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["service-token"]:
        return _print_service_token(Settings.from_env())
    # The browser demo is for this stack only: production leaves DEMO_ENABLED off.
    settings = dataclasses.replace(Settings.from_env().with_generated_secrets(), demo_enabled="on")
    configure_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    stack = EmbeddedStack(stack_data_dir(settings), redis_url=settings.redis_url,
                          kafka_bootstrap=settings.kafka_bootstrap_servers, mongo_url=settings.mongo_url)
    children: list[Child] = []
    try:
        settings = _start_backends(stack, settings)
        write_secrets(settings)
        children.append(_start("presence", [sys.executable, "-m", "app.tcp_presence"], settings,
                               [settings.presence_tcp_port, settings.presence_http_port]))
        children.append(_start("chat", [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
                               settings, [settings.chat_http_port]))
        _wait_healthy(settings, children)
        sys.stdout.write(_banner(settings, stack))
        sys.stdout.flush()
        return _supervise(children)
    except Stop:
        log.info("stopping")
        return 0
    except Exception:
        log.exception("the stack could not start")
        return 2
    finally:
        _stop_all(children, stack)
        secrets_path(settings).unlink(missing_ok=True)


def _start_backends(stack: EmbeddedStack, settings: Settings) -> Settings:
    """Start the embedded servers not configured, create the topics; the settings to use."""
    stack.start()
    settings = dataclasses.replace(settings, redis_url=stack.redis_url, kafka_bootstrap_servers=stack.kafka_bootstrap,
                                   mongo_url=stack.mongo_url)
    from app.composition import create_topics  # the composition root imports the Kafka client

    create_topics(settings)
    return settings


def _print_service_token(settings: Settings) -> int:
    """``make service-token``: the running stack's service token, for curl and scripts."""
    token = settings.service_token or read_secrets(settings).get("SERVICE_TOKEN", "")
    if not token:
        sys.stderr.write(f"no service token: is `make run` running? ({secrets_path(settings)} is missing)\n")
        return 1
    sys.stdout.write(token + "\n")
    return 0


def _start(name: str, argv: list[str], settings: Settings, ports: list[int]) -> Child:
    environ = {**settings.child_environ(), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(argv, cwd=REPO, env=environ, stdin=subprocess.DEVNULL,
                               preexec_fn=child_process_guard)
    child = Child(name, process)
    try:
        for port in ports:
            wait_for_port(port, process=process, timeout=STARTUP_TIMEOUT_S, host=settings.bind_host)
    except BaseException:
        child.stop()
        raise
    return child


def _wait_healthy(settings: Settings, children: list[Child]) -> None:
    """Until the chat worker answers /healthz (gunicorn listens before its worker is up)."""
    url = f"http://{settings.bind_host}:{settings.chat_http_port}/healthz"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        _check_alive(children)
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {STARTUP_TIMEOUT_S}s")


def _check_alive(children: list[Child]) -> None:
    for child in children:
        status = child.process.poll()
        if status is not None:
            raise ChildExited(f"{child.name} exited with status {status}")


class ChildExited(RuntimeError):
    """A supervised child process ended on its own."""


def _supervise(children: list[Child]) -> int:
    """Block until a child exits (1) or a stop signal arrives (Stop)."""
    while True:
        try:
            _check_alive(children)
        except ChildExited as exc:
            log.error("%s; stopping everything", exc)
            return 1
        time.sleep(POLL_S)


def _stop_all(children: list[Child], stack: EmbeddedStack) -> None:
    # No second signal may interrupt the clean-up half way.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for child in reversed(children):
        child.stop()
    stack.stop()


def _banner(settings: Settings, stack: EmbeddedStack) -> str:
    host, chat = settings.bind_host, settings.chat_http_port
    lines = [
        "",
        "Smooth is running:",
        f"  chat STOMP, raw WebSocket   ws://{host}:{chat}/my-chat/websocket",
        f"  chat STOMP, SockJS          http://{host}:{chat}/my-chat",
        f"  chat HTTP API               http://{host}:{chat}/chat-server/",
        f"  chat health                 http://{host}:{chat}/healthz   http://{host}:{chat}/readyz",
        f"  browser demo                http://{host}:{chat}/demo",
        f"  metrics (service token)     http://{host}:{chat}/metrics   http://{host}:{settings.presence_http_port}/metrics",
        f"  presence TCP                {host}:{settings.presence_tcp_port}",
        f"  presence HTTP               http://{host}:{settings.presence_http_port}/presence-server/",
        f"  Redis                       {stack.redis_url}",
        f"  Kafka                       {stack.kafka_bootstrap}",
        f"  MongoDB                     {stack.mongo_url}",
        f"  embedded data and logs      {stack_data_dir(settings)}",
        f"  service and presence tokens {secrets_path(settings)}",
        "",
        "Mint a token:  make token USER=5",
        f"Check:         KAFKA_BOOTSTRAP_SERVERS={stack.kafka_bootstrap} MONGO_URL={stack.mongo_url} "
        f"REDIS_URL={stack.redis_url} .venv/bin/python -m app check",
        f"Service call:  curl -X PUT -H \"X-Service-Token: $(make -s service-token)\" -H 'Content-Type: "
        f"application/json' -d '[5,9]' http://{host}:{chat}/chat-server/room-user-list/17",
        f"Metrics:       curl -H \"X-Service-Token: $(make -s service-token)\" http://{host}:{chat}/metrics",
        "Stop:          Ctrl-C",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
