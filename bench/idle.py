"""Idle-capacity scenario: how many STOMP connections one gunicorn worker holds, and RSS each.

Owns: opening connections in steps (1k, 5k, 10k by default) against one chat worker, each
connected and subscribed to its DM room, then idle; the worker's RSS (from /proc) is read
before the first step and after each, and RSS per connection is the growth over the base
divided by the connections held. Connections stay open across steps (the totals add up).

Idle CPU is sampled over ``IDLE_WINDOW_S``, long enough to take in several of the fan-out
consumers' periodic checks (``kafka_bus.LOG_CHECK_S``), and so are the Kafka records the
worker's fan-out read meanwhile: nothing is produced while the connections sit idle, so any
is a re-read (bench/FINDINGS.md, thirteenth session: a source re-read its partitions every
4 s, which a 2 s sample missed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.calls import sample_value
from bench.loadgen import LoadRun, hold_main
from bench.measure import split
from bench.procstat import cpu_seconds, rss_bytes
from bench.report import table, verdict
from bench.servers import SmoothStack
from bench.targets import SmoothTarget

__all__ = ["run"]

COLUMNS = ["connections", "held", "failures", "setup_s", "worker_rss_mb", "rss_per_conn_kb", "worker_idle_cpu_pct",
           "records_read_idle"]
SETTLE_S = 2.0
IDLE_WINDOW_S = 10.0
RECORDS_READ = "smooth_fanout_records_total"


def _step(target: SmoothTarget, worker: int, start: int, count: int, procs: int) -> tuple[LoadRun, int, list[str], float]:
    specs = target.rooms_specs(start + count, 0.0, 64)[start:]
    run = LoadRun(split(specs, procs or max(1, min(4, count // 2500 + 1))), target=hold_main)
    t0 = time.monotonic()
    held, failures = run.wait_ready()
    return run, held, failures, time.monotonic() - t0


def _idle_window(worker: int, port: int, token: str) -> tuple[float, float]:
    """The worker's CPU % of one core over ``IDLE_WINDOW_S``, and the Kafka records its fan-out read meanwhile."""
    records0, cpu0 = sample_value(port, token, RECORDS_READ), cpu_seconds(worker)
    time.sleep(IDLE_WINDOW_S)
    idle_cpu = 100 * (cpu_seconds(worker) - cpu0) / IDLE_WINDOW_S
    return idle_cpu, sample_value(port, token, RECORDS_READ) - records0


def run(data_dir: Path, levels: list[int], procs: int = 0) -> dict[str, Any]:
    rows, runs = [], []
    with SmoothStack(data_dir, mongo_in_memory=True).running() as stack:
        assert stack.settings is not None
        target = SmoothTarget(stack.chat_ports, stack.settings.redis_url, stack.settings.jwt_secret)
        worker = stack.worker_pids()[0]
        base = rss_bytes(worker)
        opened = held_total = 0
        try:
            for level in sorted(levels):
                run_, held, failures, setup_s = _step(target, worker, opened, level - opened, procs)
                runs.append(run_)
                opened, held_total = level, held_total + held
                time.sleep(SETTLE_S)
                idle_cpu, records = _idle_window(worker, stack.chat_ports[0], stack.settings.service_token)
                rss = rss_bytes(worker)
                rows.append({"connections": level, "held": held_total, "failures": failures[:2],
                             "setup_s": round(setup_s, 1), "worker_rss_mb": round(rss / 2**20, 1),
                             "rss_per_conn_kb": round((rss - base) / 1024 / max(1, held_total), 2),
                             "worker_idle_cpu_pct": round(idle_cpu, 1), "records_read_idle": int(records)})
                print(table("idle capacity (one gunicorn worker)", rows[-1:], COLUMNS), flush=True)
        finally:
            for run_ in runs:
                run_.close()
    print(table("idle capacity (one gunicorn worker)", rows, COLUMNS), flush=True)
    top = max(rows, key=lambda r: r["connections"]) if rows else None
    targets = [verdict("idle_conns", top["held"] if top else None, f"of {top['connections']:,} opened" if top else ""),
               verdict("idle_rss", top["rss_per_conn_kb"] if top and top["connections"] >= 10_000 else None,
                       f"base RSS {base / 2**20:.1f} MB")]
    return {"base_rss_mb": round(base / 2**20, 1), "levels": rows, "targets": targets}
