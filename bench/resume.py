"""Resume scenario: how long a ``SUBSCRIBE`` with ``since-seq:0`` takes to replay a room's events.

Owns: filling one DM room with ``events`` numbered events through the real path (one
connection's STOMP SENDs with receipts, pipelined a round at a time: per round of 100, 90
messages, then 6 edits and 4 deletes of them), then ``repeats`` timed resumes. Each resume
opens a connection (CONNECT untimed), sends ``SUBSCRIBE`` with ``since-seq:0`` and a receipt,
and is timed from that send until the last replayed MESSAGE is read (also: until the first).
A replay is judged off the clock: seqs 1..events in order, no gap, no duplicate, no further
MESSAGE before the RECEIPT, and bodies byte-equal to the first replay's (whose mix of
message/modify/delete must be what was sent). A wrong replay is a failed run, not a figure.
Only numbered MESSAGEs (with ``"seq"``) count: the reader's own presence ``connect`` push
reaches the room's topic too (live, after the replay) and is counted apart.

Before the timed series, ``WARMUP`` untimed replays warm the worker (its first read of the
room) and give the reference bodies. CPU per process (``CpuMeter``) is summed over the timed
windows only. With ``profile``, py-spy then records the worker and the database server (a
Python process too) over ``PROFILE_S`` seconds of further replays (after the figures, so it
does not disturb them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.auth import mint_token
from bench.measure import wait_quiet
from bench.procstat import CpuMeter
from bench.report import RESULTS_DIR, percentiles, table, verdict
from bench.servers import SmoothStack
from bench.targets import WS_PATH
from bench.wire import WsDecoder, close_frame, handshake, stomp_command, stomp_frame, ws_frame

__all__ = ["run", "targets", "plan"]

# Ids far from the other scenarios' (a --quick run shares one system between scenarios).
ROOM, SENDER, READER = 900_000, 900_001, 900_002
ROUND = 100  # events per fill round: the SENDs of a round are pipelined
CHANGE_SHARE, EDIT_SHARE = 10, 0.6  # a tenth of each round edits or deletes; 60 % of those edit
WARMUP = 3
TIMEOUT_S = 30.0  # a replay not complete by then is a failed run
PROFILE_S, PROFILE_HZ = 10, 500  # short replays: 100 Hz would give too few samples
RECV_BYTES = 1 << 18
_SEQ = b'"seq":'  # in every numbered push body; presence pushes to a room's topic have none
COLUMNS = ["events", "runs", "failed", "p50_ms", "p90_ms", "p99_ms", "max_ms", "first_frame_p50_ms",
           "events_per_s", "worker_cpu_ms_per_replay"]
CPU_COLUMNS = ["process", "cpu_s", "cpu_ms_per_replay", "cores"]


def plan(events: int) -> list[tuple[int, int, int]]:
    """(messages, edits, deletes) per fill round; together ``events`` events."""
    rounds = []
    while events > 0:
        size = min(ROUND, events)
        changes = size // CHANGE_SHARE
        edits = round(changes * EDIT_SHARE)
        rounds.append((size - changes, edits, changes - edits))
        events -= size
    return rounds


class _Client:
    """One blocking STOMP-over-WebSocket connection (bench.wire), frames read in big chunks."""

    def __init__(self, port: int, user: int, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = WsDecoder()
        self.decoder.pending.extend(self.decoder.feed(handshake(self.sock, "127.0.0.1", port, WS_PATH)))
        self.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "smooth", "heart-beat": "0,0",
                                          "access-token": mint_token(secret, user)}))
        self.until("CONNECTED")

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(ws_frame(frame) for frame in frames))

    def next_payload(self) -> bytes:
        """The next STOMP frame's payload (a WebSocket close or EOF raises)."""
        pending = self.decoder.pending
        while not pending:
            chunk = self.sock.recv(RECV_BYTES)
            if not chunk:
                raise ConnectionError("closed by server")
            pending.extend(self.decoder.feed(chunk))
        opcode, payload = pending.pop(0)
        if opcode == 0x8:
            raise ConnectionError("closed by server")
        return payload

    def until(self, command: str) -> bytes:
        while True:
            payload = self.next_payload()
            got = stomp_command(payload)
            if got == command:
                return payload
            if got == "ERROR":
                raise ConnectionError(f"ERROR waiting for {command}: {payload[:300]!r}")

    def close(self) -> None:
        try:
            self.sock.sendall(close_frame())
        except OSError:
            pass
        self.sock.close()


def _headers(payload: bytes) -> dict[str, str]:
    head = payload.split(b"\n\n", 1)[0].decode()
    return dict(line.split(":", 1) for line in head.split("\n")[1:] if ":" in line)


def _body(payload: bytes) -> bytes:
    return payload.split(b"\n\n", 1)[1].rstrip(b"\x00")


# ---------------------------------------------------------------- filling the room

def _requests(client: _Client, frames: list[tuple[str, dict[str, Any]]], start: int) -> list[dict[str, str]]:
    """Send ``frames`` (destination, body) pipelined, each with a receipt; their RECEIPTs' headers."""
    client.send(*(stomp_frame("SEND", {"destination": dest, "content-type": "application/json",
                                       "receipt": f"f-{start + n}"}, json.dumps(body).encode())
                  for n, (dest, body) in enumerate(frames)))
    receipts = {}
    while len(receipts) < len(frames):
        headers = _headers(client.until("RECEIPT"))
        receipts[headers["receipt-id"]] = headers
    return [receipts[f"f-{start + n}"] for n in range(len(frames))]


def fill(port: int, secret: str, events: int, size: int) -> dict[str, Any]:
    """Put ``events`` events into ROOM through SENDs of SENDER; how many of each and how fast."""
    client = _Client(port, SENDER, secret)
    sent: Counter[str] = Counter()
    t0 = time.monotonic()
    try:
        for messages, edits, deletes in plan(events):
            content = [_content(sent["message"] + n, size) for n in range(messages)]
            receipts = _requests(client, [("/kafka/send-direct-message", {"channelId": ROOM, "content": text})
                                          for text in content], sum(sent.values()))
            sent["message"] += messages
            step = messages // max(1, edits + deletes)
            ids = [receipts[n * step]["message-id"] for n in range(edits + deletes)]
            changes = [("/kafka/send-direct-modify", {"channelId": ROOM, "id": i, "content": f"edited {i}"})
                       for i in ids[:edits]] + [("/kafka/send-direct-delete", {"channelId": ROOM, "id": i})
                                                for i in ids[edits:]]
            _requests(client, changes, sum(sent.values()))
            sent["modify"] += edits
            sent["delete"] += deletes
    finally:
        client.close()
    seconds = time.monotonic() - t0
    return {"events": dict(sent), "seconds": round(seconds, 2), "sends_per_s": round(sum(sent.values()) / seconds, 1)}


def _content(n: int, size: int) -> str:
    text = f"resume bench {n}:"
    return text + "x" * max(0, size - len(text))


# ---------------------------------------------------------------- one replay

@dataclass
class Replay:
    total_ns: int
    first_ns: int
    payloads: list[bytes]  # the numbered MESSAGEs, in arrival order
    extra: list[bytes]  # numbered MESSAGEs after the expected ones, before the RECEIPT
    unnumbered: int  # live presence pushes to the room's topic (the reader's own connect): no seq


def replay(port: int, secret: str, events: int, meter: CpuMeter | None = None) -> Replay:
    """Connect, then time SUBSCRIBE since-seq:0 -> the ``events``-th MESSAGE; read on to the RECEIPT."""
    client = _Client(port, READER, secret)
    try:
        subscribe = stomp_frame("SUBSCRIBE", {"id": "resume", "destination": f"/topic/direct/{ROOM}",
                                              "since-seq": "0", "receipt": "resumed"})
        payloads: list[bytes] = []
        first_ns = unnumbered = 0
        if meter is not None:
            meter.start()
        t0 = time.monotonic_ns()
        client.send(subscribe)
        while len(payloads) < events:
            payload = client.next_payload()
            if payload.startswith(b"MESSAGE") and _SEQ in payload:
                payloads.append(payload)
                first_ns = first_ns or time.monotonic_ns() - t0
            elif payload.startswith(b"MESSAGE"):
                unnumbered += 1
            elif payload.startswith(b"ERROR"):
                raise ConnectionError(f"ERROR during the replay: {payload[:300]!r}")
        total_ns = time.monotonic_ns() - t0
        if meter is not None:
            meter.stop()
        extra = []
        while not (payload := client.next_payload()).startswith(b"RECEIPT"):
            if payload.startswith(b"ERROR"):
                raise ConnectionError(f"ERROR instead of the RECEIPT: {payload[:300]!r}")
            if _SEQ in payload:
                extra.append(payload)
            else:
                unnumbered += 1
        return Replay(total_ns, first_ns, payloads, extra, unnumbered)
    finally:
        client.close()


def check(result: Replay, events: int, reference: list[bytes] | None, sent: dict[str, int]) -> str:
    """Why a replay is wrong ('' when right): seqs 1..events, nothing extra, the expected bodies."""
    bodies = [_body(p) for p in result.payloads]
    seqs = [json.loads(body).get("seq") for body in bodies]
    wrong = next((n for n, seq in enumerate(seqs, 1) if seq != n), 0)
    if wrong:
        return f"seq {seqs[wrong - 1]} at position {wrong}"
    if result.extra:
        return f"{len(result.extra)} frames after seq {events}, the first: {result.extra[0][:300]!r}"
    if any(_headers(p).get("destination") != f"/topic/direct/{ROOM}" for p in result.payloads):
        return "a MESSAGE for another destination"
    if reference is None:
        kinds = dict(Counter(json.loads(body)["type"] for body in bodies))
        return "" if kinds == sent else f"types {kinds}, sent {sent}"
    return "" if bodies == reference else "bodies differ from the first replay's"


# ---------------------------------------------------------------- the scenario

def run(data_dir: Path, events: int = 1000, repeats: int = 50, size: int = 64, profile: bool = False,
        warmup: int = WARMUP) -> dict[str, Any]:
    from tests.support.rooms import set_room_members

    with SmoothStack(data_dir, mongo_in_memory=True).running() as stack:
        assert stack.settings is not None
        port, secret = stack.settings.chat_http_port, stack.settings.jwt_secret
        set_room_members(stack.settings.redis_url, ROOM, [SENDER, READER])
        filled = fill(port, secret, events, size)
        groups = {**stack.pid_groups(), "loadgen": [os.getpid()]}
        quiet_s = wait_quiet([p for pids in stack.pid_groups().values() for p in pids],
                             busy_pct=stack.idle_cpu_pct + 15)
        reference, warm_ms, failures = None, [], []
        for _ in range(warmup):
            first = replay(port, secret, events)
            warm_ms.append(round(first.total_ns / 1e6, 3))
            why = check(first, events, reference, filled["events"])
            if why:
                raise RuntimeError(f"the first replay is wrong: {why}")
            reference = reference or [_body(p) for p in first.payloads]
        series = _series(port, secret, events, repeats, reference, filled["events"], groups, failures)
        profiles = _profile(port, secret, events, {"worker": stack.worker_pids()[0],
                                                   "mongo": stack.pid_groups()["mongo"][0]}) if profile else []
    result = _figures(events, series, failures)
    result.update(fill=filled, warmup_ms=warm_ms, waited_for_quiet_s=quiet_s, size=size,
                  workers_idle_cpu_pct=stack.idle_worker_cpu_pct, profiles=profiles)
    print(table("resume: SUBSCRIBE since-seq:0 -> last replayed MESSAGE", [_row(result)], COLUMNS), flush=True)
    print(table("resume: CPU over the timed replays", result["cpu"], CPU_COLUMNS), flush=True)
    return result


@dataclass
class Series:
    """The timed replays: times of the right ones, CPU summed over every window."""

    totals: list[int]
    firsts: list[int]
    spent: Counter[str]
    unnumbered: int = 0


def _series(port: int, secret: str, events: int, repeats: int, reference: list[bytes] | None,
            sent: dict[str, int], groups: dict[str, list[int]], failures: list[str]) -> Series:
    """``repeats`` timed replays, each checked; a wrong one goes to ``failures``, not the figures."""
    series = Series([], [], Counter())
    for n in range(repeats):
        meter = CpuMeter(groups)
        try:
            result = replay(port, secret, events, meter)
        except (OSError, ConnectionError) as exc:
            failures.append(f"run {n}: {type(exc).__name__}: {exc}")
            continue
        series.spent.update(meter.spent)
        series.unnumbered += result.unnumbered
        why = check(result, events, reference, sent)
        if why:
            failures.append(f"run {n}: {why}")
            continue
        series.totals.append(result.total_ns)
        series.firsts.append(result.first_ns)
    return series


def _figures(events: int, series: Series, failures: list[str]) -> dict[str, Any]:
    totals, spent = series.totals, series.spent
    window_s = sum(totals) / 1e9
    runs = max(1, len(totals))
    cpu = [{"process": name, "cpu_s": round(seconds, 3), "cpu_ms_per_replay": round(1000 * seconds / runs, 2),
            "cores": round(seconds / window_s, 2) if window_s else 0.0}
           for name, seconds in spent.items() if name != "machine_total"]
    return {"events": events, "runs": len(totals), "failed": len(failures), "failures": failures[:10],
            "replay_ms": percentiles(totals), "first_frame_ms": percentiles(series.firsts),
            "unnumbered_pushes": series.unnumbered,
            "each_ms": [round(ns / 1e6, 3) for ns in totals],  # in run order: a drift shows here
            "each_first_frame_ms": [round(ns / 1e6, 3) for ns in series.firsts],
            "events_per_s": round(events * len(totals) / window_s, 1) if window_s else 0.0,
            "window_s": round(window_s, 3), "cpu": cpu, "server_cpu_s": dict(spent)}


def _row(result: dict[str, Any]) -> dict[str, Any]:
    lat, worker = result["replay_ms"], next((c for c in result["cpu"] if c["process"] == "chat_workers"), {})
    return {**result, "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"], "max_ms": lat["max"],
            "first_frame_p50_ms": result["first_frame_ms"]["p50"],
            "worker_cpu_ms_per_replay": worker.get("cpu_ms_per_replay", 0.0)}


def _profile(port: int, secret: str, events: int, pids: dict[str, int]) -> list[str]:
    """py-spy (raw collapsed stacks) of each of ``pids`` while replays run back to back for PROFILE_S."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    files = [RESULTS_DIR / f"profile-resume-{name}-{stamp}.txt" for name in pids]
    spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                               "--rate", str(PROFILE_HZ), "--nonblocking", "--duration", str(PROFILE_S),
                               "--pid", str(pid), "--output", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for pid, out in zip(pids.values(), files)]
    try:
        time.sleep(1.0)  # py-spy attaches
        while any(spy.poll() is None for spy in spies):
            replay(port, secret, events)
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            spy.wait(30)
    return [str(out) for out in files]


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    ok = result["runs"] > 0 and not result["failed"]
    note = f"{result['events']:,} events, {result['runs']} runs"
    item = verdict("resume_p99", result["replay_ms"]["p99"] if result["runs"] else None,
                   note if ok else f"{note}; {result['failed']} failed: {result['failures'][:2]}")
    if not ok:
        item["verdict"] = "MISS"  # a fast wrong replay is not a pass
    return [item]
