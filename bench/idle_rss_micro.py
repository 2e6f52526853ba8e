"""Quick RSS-per-idle-connection measurement of the STOMP transport (not a test, no backends).

A child process runs the real transport (``app.composition.serve_chat_domain``) on a gevent
``WSGIServer`` with the test suite's
``RecordingApplication`` (no Kafka, Mongo or Redis: this measures the transport's own
per-connection memory, not the real application's). This process opens ``--conns`` raw
WebSockets to ``/my-chat/websocket``, each doing CONNECT (``heart-beat:0,0``, or
``--heart-beat``) and one SUBSCRIBE with a receipt, then holds them idle. The server's
VmRSS is read from /proc after a warm-up round and again once the connections settled.

To compare with another revision, run the same command in a checkout of it
(``git worktree add /tmp/before REV``), on the same machine, one after the other.

``--tracemalloc`` also prints where the idle connections' Python memory was allocated (the
top lines of a tracemalloc diff between the warm-up and the settled state; the RSS figure is
then inflated by tracemalloc's own bookkeeping).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH = 200


def serve(heartbeat_ms: int, trace: bool) -> None:
    """The child: the transport on a free port; prints the port, runs until stdin closes.

    With ``trace``: a byte ``s`` on stdin takes the base tracemalloc snapshot, ``d`` prints
    the top allocation sites since then to stderr.
    """
    import tracemalloc

    if trace:
        tracemalloc.start(8)
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.os import tp_read

    from app.contracts import ChatDomain
    from app.settings import Settings
    from tests.support.chat import RecordingApplication, in_process_chat_server

    settings = Settings.from_env({}, heartbeat_ms=heartbeat_ms)
    with in_process_chat_server(settings, ChatDomain(application=RecordingApplication())) as server:
        print(server.server.server_port, flush=True)
        base = None
        while command := tp_read(0, 1):
            if command == b"s" and trace:
                base = tracemalloc.take_snapshot()
            elif command == b"d" and base is not None:
                _print_top(tracemalloc.take_snapshot().compare_to(base, "lineno"))
        gevent.sleep(0)


def _print_top(diff: list, lines: int = 30) -> None:
    total = sum(stat.size_diff for stat in diff)
    print(f"tracemalloc: {total / 1024:.0f} KiB more in all; top sites:", file=sys.stderr)
    for stat in diff[:lines]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1024:9.1f} KiB {stat.count_diff:8d} blocks  {frame.filename}:{frame.lineno}",
              file=sys.stderr)
    sys.stderr.flush()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_connections(port: int, count: int, token: str, heart_beat: str, first: int) -> list[socket.socket]:
    from bench.wire import WsDecoder, handshake, stomp_command, stomp_frame, ws_frame

    def wait_for(sock: socket.socket, decoder: WsDecoder, pending: list, command: str) -> None:
        while True:
            while pending:
                _, payload = pending.pop(0)
                if stomp_command(payload) == command:
                    return
                if stomp_command(payload) == "ERROR":
                    raise RuntimeError(payload[:200])
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed while waiting for {command}")
            pending.extend(decoder.feed(data))

    socks = []
    for start in range(0, count, BATCH):
        batch = []
        for n in range(start, min(count, start + BATCH)):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            decoder = WsDecoder()
            pending = decoder.feed(handshake(sock, "127.0.0.1", port, "/my-chat/websocket"))
            sock.sendall(ws_frame(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "smooth",
                                                          "heart-beat": heart_beat, "access-token": token})))
            batch.append((sock, decoder, pending, first + n))
        for sock, decoder, pending, _ in batch:
            wait_for(sock, decoder, pending, "CONNECTED")
        for sock, _, _, n in batch:
            sock.sendall(ws_frame(stomp_frame("SUBSCRIBE", {"id": "sub-0", "destination": f"/topic/group/{n + 1000}",
                                                            "receipt": "r-0"})))
        for sock, decoder, pending, _ in batch:
            wait_for(sock, decoder, pending, "RECEIPT")
        socks.extend(sock for sock, _, _, _ in batch)
    return socks


def _tell(server: subprocess.Popen[str], command: str) -> None:
    assert server.stdin is not None
    server.stdin.write(command)
    server.stdin.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--heart-beat", default="0,0", help="the clients' CONNECT heart-beat header")
    parser.add_argument("--server-heartbeat-ms", type=int, default=10000, help="settings.heartbeat_ms")
    parser.add_argument("--tracemalloc", action="store_true", help="print the top allocation sites")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.server_heartbeat_ms, args.tracemalloc)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from app.auth import mint_token
    from app.settings import Settings

    token = mint_token(Settings().jwt_secret, 5)
    command = [sys.executable, "-m", "bench.idle_rss_micro", "--serve",
               "--server-heartbeat-ms", str(args.server_heartbeat_ms)] \
        + (["--tracemalloc"] if args.tracemalloc else [])
    server = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        warm = open_connections(port, BATCH, token, args.heart_beat, 10**6)  # first-use allocations
        for sock in warm:
            sock.close()
        time.sleep(2.0)
        base = rss_kb(server.pid)
        _tell(server, "s")
        t0 = time.monotonic()
        socks = open_connections(port, args.conns, token, args.heart_beat, 0)
        setup_s = time.monotonic() - t0
        time.sleep(2.0)
        rss = rss_kb(server.pid)
        status = Path(f"/proc/{server.pid}/status").read_text()
        threads = next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
        print(f"server: {len(socks)} idle connections (heart-beat {args.heart_beat}, "
              f"server offer {args.server_heartbeat_ms} ms), setup {setup_s:.1f} s; base RSS {base / 1024:.1f} MB, "
              f"now {rss / 1024:.1f} MB: {(rss - base) / len(socks):.1f} KB per connection (threads {threads})")
        _tell(server, "d")
        time.sleep(3.0 if args.tracemalloc else 0.0)
        for sock in socks:
            sock.close()
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
