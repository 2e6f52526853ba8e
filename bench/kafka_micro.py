"""Micro-benchmark of the Kafka client's CPU cost inside one gevent process.

Not a test and not a ``python -m bench`` scenario: it prints figures and never fails on them.

It starts the embedded stack's broker (Tansu, ``app.embedded.start_kafka``), patches gevent
first as ``gunicorn.conf.py`` does (the chat worker runs kafka-python under gevent), and
measures the CPU time of *this* process (``time.process_time``), not wall time, in three
scenarios:

- ``produce``: ``KafkaEventBus.publish_nowait`` + ``BrokerAck.wait`` per record, at a steady
  rate and in bursts; µs of CPU per record and the publish -> ack latency.
- ``consume``: one ``FanoutConsumer`` over a ``RecordSource`` of one topic
  with records arriving from a separate feeder process (so its producer's CPU is not counted)
  at ``--rates``; µs of CPU per record consumed and the produce -> consume latency (the feeder
  stamps ``time.monotonic_ns()`` into each record; CLOCK_MONOTONIC is shared by processes).
- ``idle``: a worker's fan-out consumers with no traffic (one over the six topics; six, one
  per topic, at revisions that still have ``CONSUMER_GROUPS``): CPU % of a core.

Each scenario also reports the broker's CPU over the same window (/proc). Kafka settings
come from the environment as the server reads them (``KAFKA_FETCH_MAX_WAIT_MS=40``,
``KAFKA_LINGER_MS=0`` ...), so a setting is compared by running the script twice. ``--rev`` loads
``app/backends/kafka_bus.py`` and ``workers/consumers.py`` as they are at a git revision (the
feeder too), so one script measures before and after a change::

    .venv/bin/python -m bench.kafka_micro --rev HEAD~1 --repeat 5
    .venv/bin/python -m bench.kafka_micro --repeat 5        # the working tree

Other processes share the cores: repeat runs and read the medians it prints.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import gevent  # noqa: E402
import gevent.queue  # noqa: E402

from app.chat import events  # noqa: E402
from app.chat.model import TOPICS  # noqa: E402
from app.embedded import start_kafka  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.procstat import cpu_seconds  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FEED_TOPIC = TOPICS["channel"]
CONTENT_CHARS = 64  # the fan-out bench's message size
JOIN_TIMEOUT_S = 60.0
STAMP_DIGITS = 20
SCENARIOS = ("idle", "produce", "consume")


# ----------------------------------------------------------------- code under test

def load_modules(rev: str | None) -> tuple[types.ModuleType, types.ModuleType]:
    """``(kafka_bus, consumers)`` from the working tree, or as of git ``rev``."""
    if rev is None:
        import app.backends.kafka_bus
        import workers.consumers
        return app.backends.kafka_bus, workers.consumers
    return (_module_at(rev, "app/backends/kafka_bus.py", "rev_kafka_bus"),
            _module_at(rev, "workers/consumers.py", "rev_consumers"))


def _module_at(rev: str, path: str, name: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses look their module up by name
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


# ----------------------------------------------------------------- measuring

class Window:
    """CPU seconds of this process and of the broker, and wall seconds, since ``start``."""

    def __init__(self, broker_pid: int) -> None:
        self._broker_pid = broker_pid
        self._cpu = self._broker = self._wall = 0.0

    def start(self) -> "Window":
        self._cpu, self._broker, self._wall = time.process_time(), cpu_seconds(self._broker_pid), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        return {"cpu_s": time.process_time() - self._cpu,
                "broker_cpu_s": cpu_seconds(self._broker_pid) - self._broker,
                "wall_s": time.monotonic() - self._wall}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stamped_record(sent_ns: int) -> bytes:
    """A channel message record whose 64-character content starts with its send time."""
    content = f"{sent_ns:0{STAMP_DIGITS}d}".ljust(CONTENT_CHARS, "x")
    return events.encode({"type": "message", "id": uuid.uuid4().hex[:24], "channelId": 12, "userId": 5,
                          "name": "bench", "profileImage": None, "content": content,
                          "time": "2026-11-24T12:00:00", "communityId": 3})


# ----------------------------------------------------------------- produce

def produce_steady(bus_module: types.ModuleType, settings: Settings, window: Window,
                   rate: int, seconds: float) -> dict[str, Any]:
    """Paced publish_nowait; a second greenlet waits the acks in order, as a connection's
    in-flight SENDs are waited."""
    bus = _warm_bus(bus_module, settings)
    acks: gevent.queue.Queue = gevent.queue.Queue()
    latencies: list[float] = []
    waiter = gevent.spawn(_wait_acks, acks, latencies)
    count = int(rate * seconds)
    records = [stamped_record(0) for _ in range(count)]  # built outside the measured window
    measured = window.start()
    started = time.monotonic()
    for n in range(count):
        _sleep_until(started + n / rate)
        acks.put((time.monotonic(), bus.publish_nowait(FEED_TOPIC, "12", records[n])))
    acks.put(None)
    waiter.join()
    figures = measured.stop()
    bus.close()
    return _produce_figures(figures, count, latencies, f"steady {rate}/s")


def produce_bursts(bus_module: types.ModuleType, settings: Settings, window: Window,
                   burst: int, bursts: int, gap_s: float) -> dict[str, Any]:
    """``burst`` records at once, then every ack, then a pause (a busy sender's pipeline)."""
    bus = _warm_bus(bus_module, settings)
    latencies: list[float] = []
    records = [stamped_record(0) for _ in range(burst)]
    measured = window.start()
    for _ in range(bursts):
        sent = time.monotonic()
        pending = [bus.publish_nowait(FEED_TOPIC, "12", record) for record in records]
        for ack in pending:
            ack.wait()
        latencies.append(time.monotonic() - sent)
        gevent.sleep(gap_s)
    figures = measured.stop()
    bus.close()
    return _produce_figures(figures, burst * bursts, latencies, f"bursts of {burst}")


def _warm_bus(bus_module: types.ModuleType, settings: Settings) -> Any:
    bus = bus_module.KafkaEventBus(settings)
    for _ in range(20):  # connect, metadata, first batches: not what is measured
        bus.publish(FEED_TOPIC, "12", stamped_record(time.monotonic_ns()))
    return bus


def _wait_acks(acks: gevent.queue.Queue, latencies: list[float]) -> None:
    while (item := acks.get()) is not None:
        sent, ack = item
        ack.wait()
        latencies.append(time.monotonic() - sent)


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        gevent.sleep(delay)


def _produce_figures(figures: dict[str, float], records: int, latencies: list[float], label: str) -> dict[str, Any]:
    return {"scenario": f"produce {label}", "records": records,
            "us_per_record": figures["cpu_s"] / records * 1e6,
            "broker_us_per_record": figures["broker_cpu_s"] / records * 1e6,
            "cpu_pct": 100 * figures["cpu_s"] / figures["wall_s"],
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


# ----------------------------------------------------------------- consume

class StampDelivery:
    """``LocalDelivery`` that only notes when each push arrived; parsing waits till the end."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, bytes]] = []

    def deliver(self, destination: str, body: bytes, seq: int | None = None, audience: object = None) -> int:
        self.arrivals.append((time.monotonic_ns(), body))
        return 1

    def flush(self) -> None:
        pass

    def latencies_ms(self, first: int, last: int) -> list[float]:
        out = []
        for arrived, body in self.arrivals[first:last]:
            sent = int(json.loads(body)["message"][:STAMP_DIGITS])
            out.append((arrived - sent) / 1e6)
        return out


def consume(modules: tuple[types.ModuleType, types.ModuleType], settings: Settings, window: Window,
            rev: str | None, rate: float, seconds: float, warmup_s: float) -> dict[str, Any]:
    """One group's consumer loop fed at ``rate`` by a feeder process."""
    bus_module, consumers_module = modules
    delivery = StampDelivery()
    consumer_set = _start_consumers(modules, settings, delivery, {"channel-server-group": [FEED_TOPIC]})
    feeder = _start_feeder(settings, rev, rate, warmup_s + seconds + 1.0)
    try:
        gevent.sleep(warmup_s)
        first = len(delivery.arrivals)
        measured = window.start()
        gevent.sleep(seconds)
        figures = measured.stop()
        last = len(delivery.arrivals)
    finally:
        feeder.wait()
        consumer_set.stop()
    records = last - first
    if records == 0:
        # No figure over no records: fail instead of printing one.
        raise RuntimeError(f"consume {rate:g}/s: nothing was delivered in {seconds:g} s (see the log above)")
    latencies = delivery.latencies_ms(first, last)
    return {"scenario": f"consume {rate:g}/s", "records": records,
            "us_per_record": figures["cpu_s"] / records * 1e6,
            "broker_us_per_record": figures["broker_cpu_s"] / records * 1e6,
            "cpu_pct": 100 * figures["cpu_s"] / figures["wall_s"],
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def idle(modules: tuple[types.ModuleType, types.ModuleType], settings: Settings, window: Window,
         seconds: float) -> dict[str, Any]:
    """The fan-out consumers of one worker with nothing to consume."""
    groups = _worker_groups(modules[1])
    consumer_set = _start_consumers(modules, settings, StampDelivery(), groups)
    try:
        # the joins' last round trips (revisions that still joined groups), and the idle fetch
        # wait taking over (revisions with a FetchPace)
        gevent.sleep(1.0 + getattr(modules[0], "IDLE_AFTER_S", 0.0))
        measured = window.start()
        gevent.sleep(seconds)
        figures = measured.stop()
    finally:
        consumer_set.stop()
    return {"scenario": f"idle, {len(groups)} consumer(s)", "records": 0, "us_per_record": float("nan"),
            "broker_us_per_record": float("nan"),
            "cpu_pct": 100 * figures["cpu_s"] / figures["wall_s"],
            "broker_cpu_pct": 100 * figures["broker_cpu_s"] / figures["wall_s"],
            "p50_ms": float("nan"), "p99_ms": float("nan")}


def _worker_groups(consumers_module: types.ModuleType) -> dict[str, list[str]]:
    """Group -> topics as the composition root builds a worker's consumers at that revision."""
    if hasattr(consumers_module, "CONSUMER_GROUPS"):  # one consumer per topic (before 2026-11-25)
        return {group: [topic] for group, topic in consumers_module.CONSUMER_GROUPS.items()}
    return {consumers_module.FANOUT_GROUP: list(consumers_module.FANOUT_TOPICS)}


def _start_consumers(modules: tuple[types.ModuleType, types.ModuleType], settings: Settings,
                     delivery: Any, groups: dict[str, list[str]]) -> "_Consumers":
    """Started and ready fan-out consumers, built as ``app.composition`` builds a worker's."""
    bus_module, consumers_module = modules
    node = f"bench-{uuid.uuid4().hex[:8]}"

    def opener(group: str, topics: list[str]) -> Callable[[], Any]:
        return lambda resume_from=None: bus_module.RecordSource(settings, topics, consumers_module.group_id(group, node))

    consumers = _Consumers([consumers_module.FanoutConsumer(group, opener(group, topics), delivery)
                            for group, topics in groups.items()])
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not all(consumer.ready for consumer in consumers.items):
        if time.monotonic() > deadline:
            consumers.stop()
            raise TimeoutError("consumers not ready: " + ", ".join(c.name for c in consumers.items if not c.ready))
        gevent.sleep(0.05)
    return consumers


class _Consumers:
    """The consumers of one measurement: started together, stopped together."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        for consumer in items:
            consumer.start()

    def stop(self) -> None:
        for consumer in self.items:
            consumer.stop()


def _start_feeder(settings: Settings, rev: str | None, rate: float, seconds: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.kafka_micro", "--feed", "--bootstrap", settings.kafka_bootstrap_servers,
            "--feed-rate", str(rate), "--seconds", str(seconds)]
    if rev is not None:
        argv += ["--rev", rev]
    feeder = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE)
    assert feeder.stdout is not None
    if feeder.stdout.readline().strip() != b"ready":  # its producer is connected and warm
        raise RuntimeError("feeder did not start")
    return feeder


def feed(bus_module: types.ModuleType, settings: Settings, rate: float, seconds: float) -> None:
    """The feeder process: stamped records at ``rate`` for ``seconds``, acks waited aside."""
    bus = _warm_bus(bus_module, settings)
    print("ready", flush=True)
    acks: gevent.queue.Queue = gevent.queue.Queue()
    waiter = gevent.spawn(_wait_acks, acks, [])
    started, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            acks.put((0.0, bus.publish_nowait(FEED_TOPIC, "12", stamped_record(time.monotonic_ns()))))
        sent += max(0, due)
        gevent.sleep(min(0.001, 1 / rate))
    acks.put(None)
    waiter.join()
    bus.close()


# ----------------------------------------------------------------- running and reporting

def run_once(args: argparse.Namespace, modules: tuple[types.ModuleType, types.ModuleType],
             settings: Settings, broker_pid: int) -> list[dict[str, Any]]:
    window = Window(broker_pid)
    bus_module = modules[0]
    results = []
    if "idle" in args.only:
        results.append(idle(modules, settings, window, args.seconds))
    if "produce" in args.only:
        results.append(produce_steady(bus_module, settings, window, args.produce_rate, args.seconds))
        results.append(produce_bursts(bus_module, settings, window, args.burst, int(args.seconds / 0.1), 0.05))
    if "consume" in args.only:
        for rate in args.rates:
            results.append(consume(modules, settings, window, args.rev, rate, args.seconds, args.warmup))
    return results


def medians(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for rows in zip(*runs):
        merged: dict[str, Any] = {"scenario": rows[0]["scenario"], "runs": len(rows)}
        for key in rows[0]:
            if key != "scenario":
                merged[key] = statistics.median(row[key] for row in rows)
        out.append(merged)
    return out


def _json_safe(value: Any) -> Any:
    """NaN (a figure a scenario does not have) as null, so the output is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def print_table(rows: list[dict[str, Any]], runs: list[list[dict[str, Any]]], label: str) -> None:
    print(f"\nkafka_micro: {label}, medians of {len(runs)} run(s) (per-run values in brackets)")
    header = f"{'scenario':<22} {'us/record':>22} {'worker CPU %':>20} {'broker us/rec':>14} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for index, row in enumerate(rows):
        each = " ".join(f"{run[index]['us_per_record']:.0f}" for run in runs)
        cpu_each = " ".join(f"{run[index]['cpu_pct']:.1f}" for run in runs)
        print(f"{row['scenario']:<22} {row['us_per_record']:>8.1f} [{each:>11}] {row['cpu_pct']:>6.1f} [{cpu_each:>11}]"
              f" {row['broker_us_per_record']:>14.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    print("p50/p99: produce = publish_nowait -> ack (bursts: first send -> last ack); "
          "consume = feeder's send -> delivery")
    for row in rows:
        if "broker_cpu_pct" in row:
            print(f"{row['scenario']}: broker CPU % {row['broker_cpu_pct']:.1f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_micro", description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="measure kafka_bus.py and consumers.py as of this git revision")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every scenario (medians are reported)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="consume: seconds of traffic before measuring")
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 2000],
                        help="consume: records/s (below 1/IDLE_AFTER_S each record comes after a quiet spell)")
    parser.add_argument("--produce-rate", type=int, default=200, help="produce: steady records/s")
    parser.add_argument("--burst", type=int, default=100, help="produce: records per burst")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        help="run only these scenarios (e.g. under a profiler)")
    parser.add_argument("--json", type=Path, help="also write the raw runs and medians here")
    parser.add_argument("--feed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--feed-rate", type=float, default=200, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    modules = load_modules(args.rev)
    if args.feed:
        feed(modules[0], Settings.from_env(None, kafka_bootstrap_servers=args.bootstrap), args.feed_rate, args.seconds)
        return
    with tempfile.TemporaryDirectory(prefix="kafka-micro-") as data_dir:
        broker = start_kafka(Path(data_dir))
        try:
            settings = Settings.from_env(None, kafka_bootstrap_servers=broker.url)
            modules[0].create_topics(settings)
            runs = [run_once(args, modules, settings, broker.process.pid) for _ in range(args.repeat)]
        finally:
            broker.stop()
    label = (f"rev {args.rev}" if args.rev else "working tree") + (
        f", fetch wait {settings.kafka_fetch_max_wait_ms} ms (idle {settings.kafka_idle_fetch_max_wait_ms} ms),"
        f" linger {settings.kafka_linger_ms} ms")
    rows = medians(runs)
    print_table(rows, runs, label)
    report = {"label": label, "settings": {"fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
                                           "idle_fetch_max_wait_ms": settings.kafka_idle_fetch_max_wait_ms,
                                           "linger_ms": settings.kafka_linger_ms},
              "medians": rows, "runs": runs}
    print(json.dumps(_json_safe({"label": label, "medians": rows})))
    if args.json:
        args.json.write_text(json.dumps(_json_safe(report), indent=1))


if __name__ == "__main__":
    main()
