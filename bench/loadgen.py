"""The load generator: many STOMP-over-WebSocket connections per process, driven by epoll.

Owns: ``ConnSpec`` (one connection: where, CONNECT headers, subscriptions, what and how often
it sends), the worker process loop (batched setup, then an epoll loop that receives, parses
stamps and sends on a schedule), and ``LoadRun``, which spreads specs over processes and
runs the ready -> go -> drain -> stop protocol with them over pipes.

Receivers parse only the stamp ``bench:<sender>:<seq>:<ns>:`` out of the byte stream, count
distinct and duplicate (sender, seq) pairs per connection and keep each latency in ns.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import random
import select
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from bench.wire import STAMP_RE, WsDecoder, close_frame, handshake, stamp, stomp_command, stomp_frame, ws_frame

__all__ = ["ConnSpec", "LoadRun", "WorkerResult"]

RUN_ID_SPAN = 1_000_000  # connection ids of one run are base..base+span-1, bases only grow
SETUP_BATCH = 200
SETUP_TIMEOUT_S = 60.0
CARRY = 96
RECV_BYTES = 65536


@dataclass
class ConnSpec:
    """One client connection of a scenario (picklable)."""

    conn_id: int
    host: str
    port: int
    path: str
    connect_headers: dict[str, str]
    subscribe: list[str] = field(default_factory=list)
    send_dest: str = ""
    body_template: str = ""  # contains {content}
    rate: float = 0.0  # messages per second; 0 = never sends
    content_size: int = 64
    room: str = ""


class _Conn:
    __slots__ = ("spec", "sock", "carry", "seen", "got", "dups", "errors", "closed", "sent", "recv_frames", "stale",
                 "run_base")

    def __init__(self, spec: ConnSpec, sock: socket.socket) -> None:
        self.spec = spec
        self.sock = sock
        self.carry = b""
        self.seen: dict[int, bytearray] = {}
        self.got: dict[int, int] = {}
        self.dups = 0
        self.errors = 0
        self.closed = False
        self.sent = 0
        self.stale = 0  # stamps of an earlier run's senders (a backlog): neither counted nor timed
        self.run_base = spec.conn_id - spec.conn_id % RUN_ID_SPAN
        self.recv_frames: WsDecoder | None = WsDecoder()


# ---------------------------------------------------------------- setup (outside the hot path)

def _open(spec: ConnSpec) -> _Conn:
    sock = socket.create_connection((spec.host, spec.port), timeout=SETUP_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Conn(spec, sock)


def _await(conn: _Conn, command: str) -> None:
    """Read until a STOMP frame with ``command`` arrives; ERROR or close raise."""
    decoder = conn.recv_frames
    assert decoder is not None
    while True:
        while decoder.pending:
            opcode, payload = decoder.pending.pop(0)
            if opcode == 0x8:
                raise ConnectionError(f"closed by server waiting for {command}")
            got = stomp_command(payload)
            if got == command:
                return
            if got == "ERROR":
                raise ConnectionError(f"ERROR waiting for {command}: {payload[:300]!r}")
        chunk = conn.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed waiting for {command}")
        decoder.pending.extend(decoder.feed(chunk))


def _setup_batch(specs: list[ConnSpec]) -> list[_Conn]:
    conns = [_open(spec) for spec in specs]
    for conn in conns:
        rest = handshake(conn.sock, conn.spec.host, conn.spec.port, conn.spec.path)
        conn.recv_frames.pending.extend(conn.recv_frames.feed(rest))  # type: ignore[union-attr]
    for conn in conns:
        conn.sock.sendall(ws_frame(stomp_frame("CONNECT", conn.spec.connect_headers)))
    for conn in conns:
        _await(conn, "CONNECTED")
    for conn in conns:
        for n, dest in enumerate(conn.spec.subscribe):
            frame = stomp_frame("SUBSCRIBE", {"id": f"sub-{n}", "destination": dest, "ack": "auto",
                                              "receipt": f"r-{n}"})
            conn.sock.sendall(ws_frame(frame))
    for conn in conns:
        for _ in conn.spec.subscribe:
            _await(conn, "RECEIPT")
    return conns


def _setup(specs: list[ConnSpec]) -> tuple[list[_Conn], list[str]]:
    conns: list[_Conn] = []
    failures: list[str] = []
    for start in range(0, len(specs), SETUP_BATCH):
        try:
            conns.extend(_setup_batch(specs[start:start + SETUP_BATCH]))
        except (OSError, ConnectionError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            break
    for conn in conns:
        conn.carry = conn.recv_frames.buf if conn.recv_frames else b""  # type: ignore[assignment]
        conn.recv_frames = None
        conn.sock.setblocking(True)
        conn.sock.settimeout(None)
    return conns, failures


# ---------------------------------------------------------------- hot path

class _Receiver:
    """Per-process receive state: latencies and the per-connection counters."""

    def __init__(self) -> None:
        self.latencies = array("q")
        self.first_ns = 0
        self.last_ns = 0
        self.distinct = 0

    def on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except OSError:
            data = b""
        if not data:
            conn.closed = True
            return
        now = time.monotonic_ns()
        buf = conn.carry + data if conn.carry else data
        end = 0
        lat_append = self.latencies.append
        run_base = conn.run_base
        for match in STAMP_RE.finditer(buf):
            end = match.end()
            sender, seq, sent_ns = match.groups()
            if int(sender) < run_base:
                conn.stale += 1
                continue
            lat_append(now - int(sent_ns))
            self._count(conn, int(sender), int(seq))
        if b"ERROR\n" in data:
            conn.errors += 1
        tail = buf[end:]
        conn.carry = tail[-CARRY:]
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now

    def _count(self, conn: _Conn, sender: int, seq: int) -> None:
        seen = conn.seen.get(sender)
        if seen is None:
            seen = conn.seen[sender] = bytearray(1024)
        if seq >= len(seen):
            seen.extend(bytes(max(seq + 1 - len(seen), len(seen))))
        if seen[seq]:
            conn.dups += 1
            return
        seen[seq] = 1
        conn.got[sender] = conn.got.get(sender, 0) + 1
        self.distinct += 1


def _send_one(conn: _Conn, seq: int) -> None:
    spec = conn.spec
    content = stamp(spec.conn_id, seq, time.monotonic_ns(), spec.content_size)
    body = spec.body_template.replace("{content}", content).encode()
    headers = {"destination": spec.send_dest, "content-type": "application/json",
               "content-length": str(len(body))}
    try:
        conn.sock.sendall(ws_frame(stomp_frame("SEND", headers, body)))
        conn.sent += 1
    except OSError:
        conn.closed = True


def _schedule(conns: list[_Conn], start_ns: int) -> list[tuple[int, int, int]]:
    """A heap of (due_ns, index, seq) for every connection that sends, with random phases."""
    heap = []
    for index, conn in enumerate(conns):
        if conn.spec.rate > 0:
            phase = random.random() / conn.spec.rate if conn.spec.rate < 50 else 0.0
            heap.append((start_ns + int(phase * 1e9), index, 0))
    heapq.heapify(heap)
    return heap


def _run_loop(conns: list[_Conn], pipe: Any, start_ns: int, send_s: float) -> _Receiver:
    receiver = _Receiver()
    poller = select.epoll()
    by_fd = {conn.sock.fileno(): conn for conn in conns}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    pipe_fd = pipe.fileno()
    poller.register(pipe_fd, select.EPOLLIN)
    heap = _schedule(conns, start_ns)
    send_end = start_ns + int(send_s * 1e9)
    on_readable = receiver.on_readable
    try:
        while True:
            if heap:
                _send_due(conns, heap, send_end)
            timeout = _timeout(heap, send_end)
            for fd, _ in poller.poll(timeout):
                if fd == pipe_fd:
                    if _answer(pipe, conns, receiver):
                        return receiver
                    continue
                conn = by_fd[fd]
                on_readable(conn)
                if conn.closed:
                    poller.unregister(fd)
    finally:
        poller.close()


def _send_due(conns: list[_Conn], heap: list[tuple[int, int, int]], send_end: int) -> None:
    now = time.monotonic_ns()
    while heap and heap[0][0] <= now and heap[0][0] < send_end:
        due, index, seq = heapq.heappop(heap)
        conn = conns[index]
        if not conn.closed:
            _send_one(conn, seq)
            heapq.heappush(heap, (due + int(1e9 / conn.spec.rate), index, seq + 1))


def _timeout(heap: list[tuple[int, int, int]], send_end: int) -> float:
    if not heap or heap[0][0] >= send_end:
        return 0.2
    return max(0.0, (heap[0][0] - time.monotonic_ns()) / 1e9)


def _answer(pipe: Any, conns: list[_Conn], receiver: _Receiver) -> bool:
    """Handle one parent request; True means stop."""
    request = pipe.recv()
    if request == "stop":
        return True
    pipe.send(("count", receiver.distinct, sum(c.sent for c in conns), sum(c.closed for c in conns)))
    return False


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def worker_main(specs: list[ConnSpec], pipe: Any) -> None:
    """Entry point of one load-generator process."""
    conns, failures = _setup(specs)
    pipe.send(("ready", len(conns), failures))
    message = pipe.recv()
    if message[0] != "go":
        return
    _, start_ns, send_s = message
    cpu0 = _cpu_s()
    receiver = _run_loop(conns, pipe, start_ns, send_s)
    cpu = _cpu_s() - cpu0
    pipe.send(("result", _result(conns, receiver, cpu)))
    _close_all(conns)
    pipe.recv()  # "bye": keeps connections' teardown out of the parent's measurements


def _result(conns: list[_Conn], receiver: _Receiver, cpu: float) -> dict[str, Any]:
    return {
        "conns": [{"id": c.spec.conn_id, "room": c.spec.room, "sent": c.sent, "got": c.got,
                   "dups": c.dups, "errors": c.errors, "closed": c.closed, "stale": c.stale} for c in conns],
        "latencies": receiver.latencies.tobytes(),
        "first_ns": receiver.first_ns,
        "last_ns": receiver.last_ns,
        "cpu_s": cpu,
    }


def _close_all(conns: list[_Conn]) -> None:
    for conn in conns:
        try:
            conn.sock.sendall(ws_frame(stomp_frame("DISCONNECT", {})) + close_frame())
        except OSError:
            pass
        conn.sock.close()


def hold_main(specs: list[ConnSpec], pipe: Any) -> None:
    """Entry point for idle connections: set up, report, and hold until told to stop."""
    conns, failures = _setup(specs)
    pipe.send(("ready", len(conns), failures))
    pipe.recv()
    for conn in conns:
        conn.sock.close()


# ---------------------------------------------------------------- parent side

@dataclass
class WorkerResult:
    conns: list[dict[str, Any]]
    latencies_ns: array
    first_ns: int
    last_ns: int
    cpu_s: float


class LoadRun:
    """Spreads groups of specs over processes and drives them through one measured run."""

    def __init__(self, groups: list[list[ConnSpec]], target: Any = worker_main) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for group in groups:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(group, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def wait_ready(self, timeout: float = 600.0) -> tuple[int, list[str]]:
        """Connections set up over all processes, and any setup failures."""
        total, failures = 0, []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("load generator did not get ready in time")
            _, count, errors = pipe.recv()
            total += count
            failures.extend(errors)
        return total, failures

    def go(self, send_s: float, lead_s: float = 0.2) -> int:
        start_ns = time.monotonic_ns() + int(lead_s * 1e9)
        for pipe in self.pipes:
            pipe.send(("go", start_ns, send_s))
        return start_ns

    def counts(self) -> tuple[int, int, int]:
        """(distinct deliveries, messages sent, closed connections) so far."""
        got = sent = closed = 0
        for pipe in self.pipes:
            pipe.send("count")
        for pipe in self.pipes:
            _, g, s, c = pipe.recv()
            got, sent, closed = got + g, sent + s, closed + c
        return got, sent, closed

    def drain(self, expected_of_sent: Any, max_s: float, idle_s: float = 2.0) -> None:
        """Wait until every expected delivery arrived, nothing moved for ``idle_s``, or ``max_s``."""
        deadline = time.monotonic() + max_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            got, sent, _ = self.counts()
            if got >= expected_of_sent(sent):
                return
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > idle_s:
                return
            time.sleep(0.1)

    def stop(self) -> list[WorkerResult]:
        for pipe in self.pipes:
            pipe.send("stop")
        results = []
        for pipe in self.pipes:
            _, raw = pipe.recv()
            lat = array("q")
            lat.frombytes(raw["latencies"])
            results.append(WorkerResult(raw["conns"], lat, raw["first_ns"], raw["last_ns"], raw["cpu_s"]))
        return results

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send("bye")
            except OSError:
                pass
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.pid is not None]
