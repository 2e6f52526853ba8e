"""Micro-benchmark of the per-delivery hand-off: ``Outbox.offer`` -> writer greenlet -> socket.

Not a test and not a ``python -m bench`` scenario: it prints figures and never fails on them.

M outboxes, each drained (at a ``--rev`` before the direct path: by its own ``write_websocket``
greenlet; since then: by the direct path, a writer only for a backlog) into a fake socket that only
counts; a producer puts N frames into every outbox, yielding after every ``--burst`` events
(1: the Kafka consumer yields between records, so each writer wakes once per frame; 8: a
poll batch, so writers batch). Two producers are measured:

- ``offer``: a bare loop of ``outbox.offer(frame)`` (the hand-off alone);
- ``deliver``: ``FanoutDelivery.deliver`` over a real registry (template, subscription id,
  offer), the code path of a Kafka record;
- ``ws-raw`` and ``ws-sockjs``: ``deliver`` with each outbox pushed through the server's own
  ``PushWriter`` and framing (a raw STOMP WebSocket, a SockJS one) into a socket that only
  counts: the whole Python path of a delivery up to the system call (working tree only).

``--rev`` loads ``app/session.py`` and ``app/fanout.py`` as they are at a git revision (one from
before the transport moved into ``app/stomp/``; for later ones run the command in a checkout), so
the same script measures before and after a change::

    .venv/bin/python -m bench.outbox_micro --rev HEAD~1
    .venv/bin/python -m bench.outbox_micro            # the working tree
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from app.stomp.registry import SubscriptionRegistry  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FRAME = b"MESSAGE\ndestination:/topic/room.1\nsubscription:sub-0\ncontent-length:64\n\n" + b"x" * 64 + b"\x00"


def load(rev: str | None) -> tuple[types.ModuleType, types.ModuleType]:
    """``(session, fanout)`` modules from the working tree, or as of git ``rev``."""
    if rev is None:
        import app.stomp.fanout
        import app.stomp.outbox
        import app.stomp.ws
        writers = types.SimpleNamespace(Outbox=app.stomp.outbox.Outbox, RawFraming=app.stomp.outbox.RawFraming,
                                        drain_websocket=app.stomp.ws.drain_websocket)
        return writers, app.stomp.fanout  # type: ignore[return-value]
    modules = []
    for name in ("session", "fanout"):
        source = subprocess.run(["git", "show", f"{rev}:app/{name}.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        if name == "fanout":
            source = source.replace("from app.session import Session", "Session = object")
        module = types.ModuleType(f"rev_{name}")
        module.__file__ = f"{rev}:app/{name}.py"
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        modules.append(module)
    return modules[0], modules[1]


class CountingSink:
    """A socket that only counts what the writer sends (no system calls)."""

    __slots__ = ("messages", "writes")

    def __init__(self) -> None:
        self.messages = 0
        self.writes = 0

    def send_message(self, data: bytes) -> None:
        self.messages += 1
        self.writes += 1

    def send_messages(self, messages: list[bytes]) -> None:
        self.messages += len(messages)
        self.writes += 1

    def send_pong(self, payload: bytes) -> None:
        self.writes += 1

    def send_close(self, code: int, reason: str = "") -> None:
        self.writes += 1


class CountingWire:
    """The direct path's non-blocking socket (``WireSender``) that takes everything and counts."""

    __slots__ = ("sink", "_encoded")

    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink
        self._encoded = 0

    def send_frames(self, frames: list[bytes]) -> None:
        return self.try_send(self.encode(frames))

    # Before the outbox called send_frames (9f0df70), it called these two.
    def encode(self, frames: list[bytes]) -> bytes:
        self._encoded = len(frames)
        return b"".join(frames)

    def try_send(self, wire: bytes) -> None:
        self.sink.messages += self._encoded
        self.sink.writes += 1
        return None


class CountingSocket:
    """A WebSocket whose non-blocking send takes everything and counts: under a real ``PushWriter``,
    so the framing (raw STOMP or SockJS) is measured; one message per write (burst 1)."""

    __slots__ = ("sink",)

    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink

    def try_send(self, wire: bytes) -> None:
        self.sink.messages += 1
        self.sink.writes += 1
        return None


def push_through_websockets(outboxes: list[Any], sinks: list[CountingSink], framing_name: str) -> list[Any]:
    """The working tree's ``PushWriter`` over each outbox, with the framing the server gives a
    raw or a SockJS WebSocket (one instance for all, as the server has it)."""
    from app.stomp.outbox import RawFraming
    from app.stomp.sockjs import WEBSOCKET_FRAMING
    from app.stomp.ws import PushWriter

    framing = RawFraming() if framing_name == "raw" else WEBSOCKET_FRAMING
    for outbox, sink in zip(outboxes, sinks):
        outbox.push_to(PushWriter(outbox, CountingSocket(sink), framing), lambda: None)  # type: ignore[arg-type]
    return []


def start_writers(session: types.ModuleType, outboxes: list[Any], sinks: list[CountingSink]) -> list[Any]:
    """Old revisions: one writer greenlet per outbox. Since the direct path: push mode, no greenlet."""
    if hasattr(session, "write_websocket"):
        return [gevent.spawn(session.write_websocket, o, s, session.RawFraming()) for o, s in zip(outboxes, sinks)]
    writers: list[Any] = []
    for outbox, sink in zip(outboxes, sinks):
        def start(outbox: Any = outbox, sink: CountingSink = sink) -> None:
            writers.append(gevent.spawn(session.drain_websocket, outbox, sink, session.RawFraming()))
        outbox.push_to(CountingWire(sink), start)
    return writers


class Subscriber:
    """What FanoutDelivery reads from a Session (as of every revision measured: later ones
    also read its user, its client-ack subscriptions and its resume gates)."""

    __slots__ = ("outbox", "version", "session_id", "user_id", "subscription_bytes", "acks", "gates",
                 "__weakref__")

    def __init__(self, outbox: Any, n: int) -> None:
        self.outbox = outbox
        self.version = "1.2"
        self.session_id = str(n)
        self.user_id = n
        self.subscription_bytes: dict[str, bytes] = {}
        self.acks = types.SimpleNamespace(modes={})  # no client-ack subscription
        self.gates: dict[str, Any] = {}  # no subscription being resumed

    def close_slow_consumer(self) -> None:
        raise AssertionError("no subscriber of the micro-benchmark may overflow")


def run_once(session: types.ModuleType, fanout: types.ModuleType, *, subs: int, events: int, burst: int,
             mode: str) -> dict[str, float]:
    outboxes = [session.Outbox(max(1024, burst * 4)) for _ in range(subs)]
    sinks = [CountingSink() for _ in range(subs)]
    if mode.startswith("ws-"):
        writers = push_through_websockets(outboxes, sinks, mode.removeprefix("ws-"))
    else:
        writers = start_writers(session, outboxes, sinks)
    registry: SubscriptionRegistry[Any] = SubscriptionRegistry()
    for n, outbox in enumerate(outboxes):
        registry.add(Subscriber(outbox, n), "sub-0", "/topic/room.1")
    delivery = fanout.FanoutDelivery(registry)
    body = FRAME[-65:-1]
    gevent.sleep(0.05)  # every writer waits on its empty outbox
    gc.collect()
    gc.disable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    produce = 0.0
    for event in range(events):
        p0 = time.perf_counter()
        if mode == "offer":
            for outbox in outboxes:
                outbox.offer(FRAME)
        else:
            delivery.deliver("/topic/room.1", body)
        produce += time.perf_counter() - p0
        if (event + 1) % burst == 0:
            gevent.sleep(0)
    deadline = time.monotonic() + 60
    expected = events
    while any(s.messages < expected for s in sinks):
        if time.monotonic() > deadline:
            raise TimeoutError("writers did not drain in 60 s")
        gevent.sleep(0)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    gc.enable()
    writes = sum(s.writes for s in sinks)
    for outbox in outboxes:
        outbox.close()
    gevent.joinall(writers, timeout=10)
    deliveries = subs * events
    return {"us_per_delivery_cpu": 1e6 * cpu / deliveries, "us_per_delivery_wall": 1e6 * wall / deliveries,
            "us_per_delivery_producer": 1e6 * produce / deliveries, "frames_per_write": deliveries / writes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=None, help="git revision of app/session.py + app/fanout.py (default: tree)")
    parser.add_argument("--subs", type=int, default=5000)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the best is reported")
    args = parser.parse_args()
    session, fanout = load(args.rev)
    print(f"app/session.py + app/fanout.py from {args.rev or 'the working tree'}; {args.subs} outboxes, "
          f"{args.events} events each, best of {args.repeat}")
    print(f"{'case':<22} {'cpu us/dlv':>10} {'wall us/dlv':>11} {'producer us/dlv':>15} {'frames/write':>12}")
    for mode in ("offer", "deliver", "ws-raw", "ws-sockjs"):
        for burst in ((1,) if mode.startswith("ws-") else (1, 8)):
            runs = [run_once(session, fanout, subs=args.subs, events=args.events, burst=burst, mode=mode)
                    for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["us_per_delivery_cpu"])
            print(f"{mode + ' burst=' + str(burst):<22} {best['us_per_delivery_cpu']:>10.2f} "
                  f"{best['us_per_delivery_wall']:>11.2f} {best['us_per_delivery_producer']:>15.2f} "
                  f"{best['frames_per_write']:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
