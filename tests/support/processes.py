"""Run Smooth's own servers (gunicorn chat, presence) as real child processes for tests.

A ``ServiceProcess`` starts a command with an environment built from ``Settings``, waits for
its ports, and on stop sends SIGTERM, then SIGKILL. ``kill()`` sends SIGKILL at once, which
tests use to simulate a node dying.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from app.embedded import child_process_guard, wait_for_port
from app.settings import Settings

__all__ = ["ServiceProcess", "chat_server_process", "presence_server_process", "wait_ready", "REPO"]

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """One of our servers running in a child process."""

    def __init__(self, name: str, argv: list[str], settings: Settings, ports: list[int],
                 log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.settings = settings
        self.ports = ports
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **settings.as_environ(), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "ServiceProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=child_process_guard)
        log.close()
        try:
            for port in self.ports:
                wait_for_port(port, process=self.process, timeout=60)
        except BaseException:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; log:\n{self.log_tail()}") from None
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed node would die."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def chat_server_process(settings: Settings, log_dir: Path, name: str = "chat") -> ServiceProcess:
    """gunicorn with gunicorn.conf.py, exactly as `make run` starts it."""
    argv = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]
    return ServiceProcess(name, argv, settings, [settings.chat_http_port], log_dir)


def presence_server_process(settings: Settings, log_dir: Path, name: str = "presence") -> ServiceProcess:
    argv = [sys.executable, "-m", "app.tcp_presence"]
    ports = [settings.presence_tcp_port, settings.presence_http_port]
    return ServiceProcess(name, argv, settings, ports, log_dir)


def wait_ready(http_url: str, timeout_s: float, *, check_alive: Callable[[], None] | None = None) -> Any:
    """Poll ``{http_url}/readyz`` until 200 and return its JSON body.

    Readiness covers Mongo, Redis and the Kafka consumers' positions, so a test may send
    right after this returns. ``check_alive`` raises if the server under test died.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if check_alive is not None:
            check_alive()
        try:
            with urllib.request.urlopen(http_url + "/readyz", timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            last = error.read()
        except OSError as error:
            last = error
        time.sleep(0.1)
    raise AssertionError(f"{http_url} not ready: {last!r}")
