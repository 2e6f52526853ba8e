"""Presence scenario: request/reply rate and latency over C concurrent TCP line connections.

Owns: the request mix (JSON ``state`` moves and legacy ``direct`` lookups, CRLF-terminated),
the closed-loop client (each connection sends one line, waits for its one-line reply, sends
the next; several processes, each with a selector), and the presence table. The presence
server alone is started (Redis + ``python -m app.tcp_presence``), no chat node.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import selectors
import socket
import time
from array import array
from pathlib import Path
from typing import Any

from bench.procstat import CpuMeter
from bench.report import percentiles, table

__all__ = ["run", "requests_for"]

COLUMNS = ["connections", "requests", "errors", "requests_per_s", "p50_ms", "p99_ms", "max_ms",
           "presence_cpu_s", "redis_cpu_s", "loadgen_cpu_s"]


def requests_for(conn: int) -> list[bytes]:
    """The lines one connection cycles through: a login, state moves, legacy direct lookups."""
    user = 1000 + conn
    session = f"b{conn}"
    return [
        ('{"type":"login","user_id":"%d","session_id":"%s"}\r\n' % (user, session)).encode(),
        ('{"type":"state","user_id":"%d","session_id":"%s","channel_id":"c-%d"}\r\n'
         % (user, session, 10 + conn % 7)).encode(),
        ("{type='direct', session_id='null', user_id='null', channel_id='r-%d', community_id='null', "
         "ids=[%d, %d]}\r\n" % (17 + conn % 5, user, user + 1)).encode(),
        ('{"type":"state","user_id":"%d","session_id":"%s","channel_id":"home"}\r\n' % (user, session)).encode(),
    ]


SAMPLES: list[bytes] = []  # first replies seen by a client process, kept for the raw result


def _client(port: int, conn_ids: list[int], duration: float, pipe: Any) -> None:
    sel = selectors.DefaultSelector()
    state = {}
    for cid in conn_ids:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state[sock] = [requests_for(cid), 0, 0, b""]  # lines, index, sent_ns, buffer
        sel.register(sock, selectors.EVENT_READ)
    pipe.send("ready")
    pipe.recv()
    cpu0, lat, errors = sum(os.times()[:2]), array("q"), 0
    end = time.monotonic() + duration
    for sock, st in state.items():
        _send(sock, st)
    while time.monotonic() < end:
        for key, _ in sel.select(0.2):
            errors += _on_reply(key.fileobj, state[key.fileobj], lat)  # type: ignore[index]
    pipe.send((lat.tobytes(), errors, sum(os.times()[:2]) - cpu0, [x.decode(errors="replace") for x in SAMPLES]))
    for sock in state:
        sock.close()


def _send(sock: socket.socket, st: list[Any]) -> None:
    lines = st[0]
    st[2] = time.monotonic_ns()
    sock.sendall(lines[st[1] % len(lines)])
    st[1] += 1


def _on_reply(sock: socket.socket, st: list[Any], lat: array) -> int:
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("presence closed a connection")
    st[3] += data
    if b"\n" not in st[3]:
        return 0
    line, _, st[3] = st[3].partition(b"\n")
    if len(SAMPLES) < 4:
        SAMPLES.append(line)
    lat.append(time.monotonic_ns() - st[2])
    _send(sock, st)
    return 1 if b'"error"' in line or line.startswith(b"error") else 0


def measure(port: int, connections: int, duration: float, procs: int, pid_groups: dict[str, list[int]]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    ids = list(range(connections))
    for n in range(procs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client, args=(port, ids[n::procs], duration, child), daemon=True)
        proc.start()
        pipes.append(parent)
        workers.append(proc)
    for pipe in pipes:
        pipe.recv()
    meter = CpuMeter(pid_groups)
    meter.start()
    for pipe in pipes:
        pipe.send("go")
    outs = [pipe.recv() for pipe in pipes]
    cpu = meter.stop()
    for proc in workers:
        proc.join(10)
    lat = array("q")
    for raw, *_ in outs:
        lat.extend(array("q", raw))
    return {"connections": connections, "duration_s": duration, "requests": len(lat),
            "errors": sum(o[1] for o in outs), "requests_per_s": round(len(lat) / duration, 1),
            "latency_ms": percentiles(lat), "server_cpu_s": cpu,
            "loadgen_cpu_s": round(sum(o[2] for o in outs), 3), "sample_replies": outs[0][3]}


def run(data_dir: Path, connections: int = 50, duration: float = 10.0, procs: int = 1) -> dict[str, Any]:
    from bench.servers import SmoothStack

    with SmoothStack(data_dir, chat=False, mongo_in_memory=True).running() as stack:
        assert stack.settings is not None
        result = measure(stack.settings.presence_tcp_port, connections, duration, procs,
                         {k: v for k, v in stack.pid_groups().items() if k in ("presence", "redis")})
    lat = result["latency_ms"]
    print(table("presence (TCP line protocol)", [{
        **result, "p50_ms": lat["p50"], "p99_ms": lat["p99"], "max_ms": lat["max"],
        "presence_cpu_s": result["server_cpu_s"].get("presence", 0.0),
        "redis_cpu_s": result["server_cpu_s"].get("redis", 0.0)}], COLUMNS), flush=True)
    return result
