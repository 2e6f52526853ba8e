"""One measured message run: start load processes, go, drain, and turn raw counts into figures.

Owns: ``measure`` (the run protocol around ``LoadRun`` with server CPU read from /proc
over exactly the measured window) and ``summarize`` (deliveries/s, latency percentiles,
lost and duplicate deliveries per subscriber, CPU per delivery, load-generator CPU).
Scenarios decide who connects where; this module is the same for Smooth and RabbitMQ.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from array import array
from typing import Any, Callable

from bench.loadgen import RUN_ID_SPAN, ConnSpec, LoadRun, WorkerResult
from bench.procstat import CpuMeter, cpu_seconds
from bench.report import RESULTS_DIR, percentiles

__all__ = ["measure", "split", "next_base", "wait_quiet"]

_runs = itertools.count(1)
# Timing knobs; ``--quick`` (the smoke tests) shortens them.
DRAIN_IDLE_S = 3.0  # drain ends when nothing arrived for this long
QUIET_SAMPLE_S = 1.0  # wait_quiet samples server CPU over windows this long


def next_base() -> int:
    """A connection-id base unique to this run (ids of earlier runs' stamps never match)."""
    return next(_runs) * RUN_ID_SPAN


def wait_quiet(pids: list[int], busy_pct: float = 10.0, max_s: float = 120.0) -> float:
    """Wait until ``pids`` together use under ``busy_pct`` of a CPU over ``QUIET_SAMPLE_S``; returns seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(QUIET_SAMPLE_S)
        if 100 * (sum(cpu_seconds(p) for p in pids) - before) / QUIET_SAMPLE_S < busy_pct:
            break
    return round(time.monotonic() - t0, 1)


def split(specs: list[ConnSpec], procs: int) -> list[list[ConnSpec]]:
    procs = max(1, min(procs, len(specs)))
    return [specs[i::procs] for i in range(procs)]


def measure(groups: list[list[ConnSpec]], server_pids: Callable[[], dict[str, list[int]]],
            duration: float, deliveries_per_send: int, senders_of: Callable[[dict[str, Any]], list[int]],
            max_drain_s: float = 60.0, profile: str = "") -> dict[str, Any]:
    """Run ``groups`` (one process each) for ``duration`` seconds of sending, then drain.

    With ``profile`` (a file name stem), py-spy records the chat workers and the embedded
    database server (pure Python, and the first to saturate on the send path) over the sending window.
    """
    run = LoadRun(groups)
    try:
        t0 = time.monotonic()
        ready, failures = run.wait_ready()
        setup_s = time.monotonic() - t0
        wanted = sum(len(g) for g in groups)
        if ready < wanted:
            raise RuntimeError(f"only {ready}/{wanted} connections set up: {failures[:3]}")
        meter = CpuMeter({**server_pids(), "loadgen": run.pids})
        pids = server_pids()
        spies = _start_profiles(profile, pids.get("chat_workers", []) + pids.get("mongo", []), duration)
        meter.start()
        start_ns = run.go(duration)
        time.sleep(duration + 0.3)
        run.drain(lambda sent: sent * deliveries_per_send, max_s=max_drain_s, idle_s=DRAIN_IDLE_S)
        cpu = meter.stop()
        results = run.stop()
        for spy in spies:
            spy.wait(30)
    finally:
        run.close()
    summary = summarize(results, start_ns, senders_of)
    summary.update(connections=ready, setup_s=round(setup_s, 2), server_cpu_s=cpu)
    return summary


def _start_profiles(stem: str, pids: list[int], duration: float) -> list[subprocess.Popen[bytes]]:
    """py-spy record (raw collapsed stacks, 100 Hz) of each pid into bench/results/<stem>-<pid>.txt."""
    if not stem:
        return []
    spy = Path(sys.executable).parent / "py-spy"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([str(spy), "record", "--format", "raw", "--rate", "100", "--nonblocking",
                              "--duration", str(max(1, int(duration))), "--pid", str(pid),
                              "--output", str(RESULTS_DIR / f"{stem}-{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]


def summarize(results: list[WorkerResult], start_ns: int,
              senders_of: Callable[[dict[str, Any]], list[int]]) -> dict[str, Any]:
    conns = [c for r in results for c in r.conns]
    sent = {c["id"]: c["sent"] for c in conns}
    delivered = sum(min(c["got"].get(s, 0), sent.get(s, 0)) for c in conns for s in senders_of(c))
    stale = sum(sum(c["got"].values()) for c in conns) - delivered + sum(c.get("stale", 0) for c in conns)
    expected = sum(sent.get(s, 0) for c in conns for s in senders_of(c))
    latencies = array("q")
    for r in results:
        latencies.extend(r.latencies_ns)
    last_ns = max((r.last_ns for r in results), default=start_ns)
    window_s = max(1e-9, (last_ns - start_ns) / 1e9)
    return {
        "sent": sum(sent.values()),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": sum(c["dups"] for c in conns),
        "stale_or_foreign": stale,
        "subscribers_missing_any": sum(1 for c in conns if any(
            c["got"].get(s, 0) < sent.get(s, 0) for s in senders_of(c))),
        "error_frames": sum(c["errors"] for c in conns),
        "closed_by_server": sum(1 for c in conns if c["closed"]),
        "window_s": round(window_s, 3),
        "deliveries_per_s": round(delivered / window_s, 1),
        "latency_ms": percentiles(latencies),
        "loadgen_cpu_s": round(sum(r.cpu_s for r in results), 3),
    }


def cpu_figures(summary: dict[str, Any], server_groups: list[str]) -> dict[str, float]:
    """CPU seconds per 1,000 deliveries and microseconds per delivery for ``server_groups``."""
    delivered = max(1, summary["delivered"])
    server = sum(summary["server_cpu_s"].get(g, 0.0) for g in server_groups)
    return {"server_cpu_total_s": round(server, 3),
            "cpu_s_per_1000_deliveries": round(1000 * server / delivered, 4),
            "cpu_us_per_delivery": round(1e6 * server / delivered, 2),
            "loadgen_us_per_delivery": round(1e6 * summary["loadgen_cpu_s"] / delivered, 2)}
