"""The systems under test: Smooth (embedded stack + presence + gunicorn) and RabbitMQ Web-STOMP.

Owns: ``SmoothStack``, which starts Redis/Kafka/Mongo (``EmbeddedStack``), creates the Kafka
topics, starts the presence process and one or more chat nodes (gunicorn, ``CHAT_WORKERS``
workers each) on free ports and waits for ``/readyz``; ``RabbitPeer``, which uses a
RabbitMQ already serving Web-STOMP or starts ``rabbitmq-server`` as a child on free ports;
and the pid groups each exposes for CPU accounting.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from app.embedded import EmbeddedStack, child_process_guard, free_port, wait_for_port
from app.settings import Settings
from bench import procstat
from tests.support.processes import ServiceProcess, chat_server_process, presence_server_process

__all__ = ["SmoothStack", "RabbitPeer", "WEB_STOMP_DEFAULT_PORT", "listening"]

RABBIT_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"
IDLE_SAMPLE_S = 3.0  # how long the servers' background CPU is sampled after start (``--quick``: less)
# ``--quick`` with several scenarios in one invocation: scenarios share a running system of the
# same configuration instead of each starting its own (``stop_shared`` at the end). Never for
# measurements: there every scenario starts on fresh systems.
REUSE = False
_shared: dict[tuple[object, ...], "SmoothStack | RabbitPeer"] = {}


def stop_shared() -> None:
    """Stop every shared system, side by side."""
    import threading

    threads = [threading.Thread(target=system.stop) for system in _shared.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _shared.clear()
WEB_STOMP_DEFAULT_PORT = 15674  # RabbitMQ's own default, used only to detect a running broker


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


def wait_ready(url: str, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = str(response.status)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


class SmoothStack:
    """Smooth as `make run` would run it, on free ports, for one scenario."""

    def __init__(self, data_dir: Path, *, workers: int = 1, nodes: int = 1,
                 mongo_in_memory: bool = False, chat: bool = True, settings: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.overrides = settings or {}  # Settings fields that differ from the bench's (bench/soak.py)
        self.workers = workers
        self.node_count = nodes
        self.chat = chat
        self.mongo_in_memory = mongo_in_memory
        self.embedded = EmbeddedStack(data_dir, mongo_in_memory=mongo_in_memory)
        self.presence: ServiceProcess | None = None
        self.nodes: list[ServiceProcess] = []
        self.settings: Settings | None = None
        self.node_settings: list[Settings] = []
        self.idle_cpu_pct = 0.0
        self.idle_worker_cpu_pct = 0.0

    def start(self) -> "SmoothStack":
        self.embedded.start()
        base = Settings.from_env(redis_url=self.embedded.redis_url, kafka_bootstrap_servers=self.embedded.kafka_bootstrap,
                        mongo_url=self.embedded.mongo_url, presence_tcp_port=free_port(),
                        presence_http_port=free_port(), chat_http_port=free_port(),
                        chat_workers=self.workers, data_dir=str(self.data_dir), log_level="WARNING",
                        # Load generators send far past a client's SEND rate limit.
                        **{"send_rate_limit": 0, **self.overrides})
        self.settings = base
        logs = self.data_dir / "logs"
        self.presence = presence_server_process(base, logs).start()
        if self.chat:
            self._start_chat(base, logs)
        return self

    def _start_chat(self, base: Settings, logs: Path) -> None:
        from app.composition import create_topics

        create_topics(base)
        for n in range(self.node_count):
            port = base.chat_http_port if n == 0 else free_port()
            settings = Settings(**{**base.__dict__, "chat_http_port": port, "node_id": f"bench-node-{n}"})
            self.node_settings.append(settings)
            self.nodes.append(chat_server_process(settings, logs, name=f"chat{n}").start())
        for settings in self.node_settings:
            wait_ready(f"http://127.0.0.1:{settings.chat_http_port}/readyz")
        self.idle_cpu_pct = self._idle_cpu_pct()
        self.idle_worker_cpu_pct = self._idle_cpu_pct(pids=self.worker_pids())

    def _idle_cpu_pct(self, seconds: float = 0.0, pids: list[int] | None = None) -> float:
        """CPU % of one core all server processes use with no client at all (their background work)."""
        seconds = seconds or IDLE_SAMPLE_S
        pids = pids if pids is not None else [p for group in self.pid_groups().values() for p in group]
        before = sum(procstat.cpu_seconds(p) for p in pids)
        time.sleep(seconds)
        return round(100 * (sum(procstat.cpu_seconds(p) for p in pids) - before) / seconds, 1)

    def stop(self) -> None:
        """Chat nodes and presence side by side (SIGTERM all, then wait), then the backends.

        An in-memory MongoDB-wire server is killed outright (it spends ~2 s on a graceful
        stop and has nothing to keep); the others get SIGTERM together.
        """
        services = [*self.nodes, *([self.presence] if self.presence is not None else [])]
        _terminate([s.process for s in services])
        for service in services:
            service.stop()
        for server in self.embedded.servers:
            if server.name == "mongo" and self.mongo_in_memory:
                _terminate([server.process], signal.SIGKILL)
        _terminate([s.process for s in self.embedded.servers])
        self.embedded.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator["SmoothStack"]:
        if REUSE:
            key = ("smooth", self.workers, self.node_count, self.mongo_in_memory, self.chat,
                   tuple(sorted(self.overrides.items())))
            if not self.chat:  # presence alone: any running stack has it
                key = next((k for k in _shared if k[0] == "smooth"), key)
            if key not in _shared:
                _shared[key] = self.start()
            yield _shared[key]  # type: ignore[misc]
            return
        try:
            yield self.start()
        finally:
            self.stop()

    @property
    def chat_ports(self) -> list[int]:
        return [s.chat_http_port for s in self.node_settings]

    def worker_pids(self) -> list[int]:
        """gunicorn worker processes of every node (children of each master)."""
        pids: list[int] = []
        for node in self.nodes:
            if node.process is not None:
                pids.extend(procstat.children(node.process.pid))
        return pids

    def pid_groups(self) -> dict[str, list[int]]:
        groups = {"chat_workers": self.worker_pids(),
                  "chat_masters": [n.process.pid for n in self.nodes if n.process is not None],
                  "presence": [self.presence.process.pid] if self.presence and self.presence.process else []}
        for server in self.embedded.servers:
            groups[server.name] = [server.process.pid] + procstat.descendants(server.process.pid)
        return groups


class RabbitPeer:
    """RabbitMQ with Web-STOMP: detected on its default port, or started here on free ports."""

    def __init__(self) -> None:
        self.port = WEB_STOMP_DEFAULT_PORT
        self.process: subprocess.Popen[bytes] | None = None
        self.started_epmd = False
        self.state_dir: Path | None = None

    def start(self, timeout: float = 90.0) -> "RabbitPeer":
        if listening(self.port):
            return self
        if not Path(RABBIT_BIN).exists():
            raise FileNotFoundError("rabbitmq-server is not installed (see bench/README.md)")
        self.started_epmd = not listening(4369)
        self.port = free_port()
        erl_args = (f"-rabbitmq_web_stomp tcp_config [{{ip,\"127.0.0.1\"}},{{port,{self.port}}}] "
                    f"-rabbitmq_stomp tcp_listeners [{{\"127.0.0.1\",{free_port()}}}] -rabbit loopback_users []")
        user = pwd.getpwnam("rabbitmq")
        # Own node name and state directory: another bench (or test run) may run its broker now.
        self.state_dir = Path(tempfile.mkdtemp(prefix="bench-rabbitmq-"))
        os.chown(self.state_dir, user.pw_uid, user.pw_gid)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": user.pw_dir, "LANG": "C.UTF-8",
               "RABBITMQ_NODENAME": f"bench{os.getpid()}-{self.port}@localhost",
               "RABBITMQ_MNESIA_BASE": str(self.state_dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.state_dir / "log"),
               "RABBITMQ_NODE_PORT": str(free_port()), "RABBITMQ_DIST_PORT": str(free_port()),
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args}
        self.process = subprocess.Popen([RABBIT_BIN], env=env, cwd=user.pw_dir, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                        preexec_fn=lambda: _drop_to(user))
        wait_for_port(self.port, process=self.process, timeout=timeout)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.started_epmd and shutil.which("epmd"):  # epmd refuses while another node is registered
            subprocess.run(["epmd", "-kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None
        self.process = None

    @contextlib.contextmanager
    def running(self) -> Iterator["RabbitPeer"]:
        if REUSE:
            if ("rabbitmq",) not in _shared:
                _shared["rabbitmq",] = self.start()
            yield _shared["rabbitmq",]  # type: ignore[misc]
            return
        try:
            yield self.start()
        finally:
            self.stop()

    def pid_groups(self) -> dict[str, list[int]]:
        """The broker we started (rabbitmq-server and its children), or every beam.smp for one found running."""
        if self.process is not None:
            return {"rabbitmq": [self.process.pid] + procstat.descendants(self.process.pid)}
        return {"rabbitmq": _pids_named("beam.smp")}


def _terminate(procs: list[subprocess.Popen[bytes] | None], signum: int = signal.SIGTERM) -> None:
    """Signal each live process's group (our servers run in their own groups)."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)


def _drop_to(user: pwd.struct_passwd) -> None:
    """preexec_fn: own process group, die with the parent, run as the rabbitmq user (no su)."""
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    child_process_guard()  # after setuid: changing credentials clears the parent-death signal


def _pids_named(comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                    found.append(int(entry))
    return found
