"""Fan-out scenario: N subscribers of one channel, one sender at R msg/s, Smooth and RabbitMQ.

Owns: one fan-out measurement against a running system (``fanout_once``), the side-by-side
run over a list of (subscribers, rate) points with Smooth/RabbitMQ ratios (``run``), the
scaling runs (2 workers, 2 nodes), and the fan-out rows of the targets table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.measure import cpu_figures, measure, next_base, split, wait_quiet
from bench.report import table, verdict
from bench.servers import RabbitPeer, SmoothStack
from bench.targets import RabbitTarget, SmoothTarget

__all__ = ["fanout_once", "run_smooth", "run_rabbit", "POINTS"]

# (subscribers, msg/s): the N values, plus the two target points.
POINTS = [(100, 200), (200, 200), (1000, 20), (5000, 4)]
SMOOTH_GROUPS = ["chat_workers"]
COLUMNS = ["system", "subs", "rate", "senders", "sent", "delivered", "deliveries_per_s", "lost", "dups",
           "p50_ms", "p99_ms", "max_ms", "cpu_us_per_delivery", "cpu_s_per_1000", "backend_cpu_s",
           "loadgen_cpu_s", "other_cpu_s"]


def procs_for(subscribers: int, procs: int) -> int:
    return procs or max(1, min(4, math.ceil(subscribers / 1500)))


def fanout_once(target: Any, pid_groups: Any, subscribers: int, rate: float, duration: float,
                size: int, procs: int = 0, profile: bool = False, senders: int = 1,
                idle_pct: float = 0.0, max_drain_s: float = 60.0) -> dict[str, Any]:
    """One point. ``idle_pct``: the servers' CPU % with no clients (waited for before starting)."""
    base = next_base()
    quiet_s = wait_quiet([p for pids in pid_groups().values() for p in pids], busy_pct=idle_pct + 15)
    subs, send = target.fanout_specs(subscribers, rate, size, base, senders)
    groups = split(subs, procs_for(subscribers, procs)) + [send]
    sender_ids = list(range(base, base + senders))
    summary = measure(groups, pid_groups, duration, deliveries_per_send=subscribers,
                      senders_of=lambda conn: sender_ids if conn["id"] >= base + senders else [],
                      max_drain_s=max_drain_s, profile=f"profile-fanout-{subscribers}x{rate:g}" if profile else "")
    summary["waited_for_quiet_s"] = quiet_s
    summary.update(system=target.name, subscribers=subscribers, rate=rate, senders=senders, duration_s=duration,
                   content_size=size)
    server_groups = SMOOTH_GROUPS if target.name == "smooth" else ["rabbitmq"]
    summary.update(cpu_figures(summary, server_groups))
    return summary


def row(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        return {"system": result["system"], "subs": result["subscribers"], "rate": result["rate"],
                "sent": "ERROR: " + result["error"][:150]}
    cpu = result["server_cpu_s"]
    backend = sum(v for k, v in cpu.items() if k in ("kafka", "mongo", "redis", "presence"))
    lat = result["latency_ms"]
    return {"system": result["system"], "subs": result["subscribers"], "rate": result["rate"],
            "senders": result["senders"], "sent": result["sent"], "delivered": result["delivered"],
            "deliveries_per_s": result["deliveries_per_s"], "lost": result["lost"],
            "dups": result["duplicates"], "p50_ms": lat["p50"], "p99_ms": lat["p99"], "max_ms": lat["max"],
            "cpu_us_per_delivery": result["cpu_us_per_delivery"],
            "cpu_s_per_1000": result["cpu_s_per_1000_deliveries"],
            "backend_cpu_s": round(backend, 2) if result["system"] == "smooth" else "-",
            "loadgen_cpu_s": result["loadgen_cpu_s"], "other_cpu_s": cpu.get("other_processes", 0.0)}


def run_smooth(points: list[tuple[int, float]], duration: float, size: int, data_dir: Path,
               workers: int = 1, nodes: int = 1, procs: int = 0, profile: bool = False,
               senders: int = 1) -> list[dict[str, Any]]:
    out = []
    with SmoothStack(data_dir, workers=workers, nodes=nodes, mongo_in_memory=True).running() as stack:
        assert stack.settings is not None
        target = SmoothTarget(stack.chat_ports, stack.settings.redis_url, stack.settings.jwt_secret)
        for subscribers, rate in points:
            result = _guarded(target, stack.pid_groups, subscribers, rate, duration, size, procs, profile, senders,
                              stack.idle_cpu_pct)
            result.update(workers=workers, nodes=nodes, servers_idle_cpu_pct=stack.idle_cpu_pct,
                          workers_idle_cpu_pct=stack.idle_worker_cpu_pct)
            out.append(result)
            print(table(f"fan-out smooth workers={workers} nodes={nodes}", [row(result)], COLUMNS), flush=True)
    return out


def run_rabbit(points: list[tuple[int, float]], duration: float, size: int, procs: int = 0,
               senders: int = 1) -> list[dict[str, Any]]:
    out = []
    with RabbitPeer().running() as peer:
        target = RabbitTarget(peer.port)
        for subscribers, rate in points:
            result = _guarded(target, peer.pid_groups, subscribers, rate, duration, size, procs, senders=senders)
            out.append(result)
            print(table("fan-out rabbitmq", [row(result)], COLUMNS), flush=True)
    return out


def _guarded(target: Any, pid_groups: Any, subscribers: int, rate: float, duration: float, size: int,
             procs: int, profile: bool = False, senders: int = 1, idle_pct: float = 0.0) -> dict[str, Any]:
    """One point; a failure (e.g. connections refused) is recorded, and the next point still runs."""
    try:
        return fanout_once(target, pid_groups, subscribers, rate, duration, size, procs, profile, senders,
                           idle_pct)
    except (RuntimeError, OSError, TimeoutError) as exc:
        return {"system": target.name, "subscribers": subscribers, "rate": rate, "error": str(exc)}


def ratios(smooth: list[dict[str, Any]], rabbit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Smooth/RabbitMQ for each point both ran."""
    peers = {(r["subscribers"], r["rate"], r.get("senders", 1)): r for r in rabbit}
    rows = []
    for s in smooth:
        r = peers.get((s["subscribers"], s["rate"], s.get("senders", 1)))
        if r is None or "error" in s or "error" in r:
            continue
        rows.append({"subs": s["subscribers"], "rate": s["rate"], "senders": s.get("senders", 1),
                     "deliveries_per_s": _ratio(s["deliveries_per_s"], r["deliveries_per_s"]),
                     "p50": _ratio(s["latency_ms"]["p50"], r["latency_ms"]["p50"]),
                     "p99": _ratio(s["latency_ms"]["p99"], r["latency_ms"]["p99"]),
                     "cpu_per_delivery": _ratio(s["cpu_us_per_delivery"], r["cpu_us_per_delivery"]),
                     "smooth_lost": s["lost"], "rabbit_lost": r["lost"]})
    return rows


def _ratio(a: float, b: float) -> float | str:
    return round(a / b, 2) if b else "-"


def targets(smooth: list[dict[str, Any]], rabbit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    smooth = [s for s in smooth if "error" not in s]
    out = []  # the Smooth/RabbitMQ target is the sweep's (max zero-loss rate), not a fixed-rate point
    s1000 = _find(smooth, 1000, 20)
    out.append(verdict("fanout_p99", s1000["latency_ms"]["p99"] if s1000 else None,
                       f"lost {s1000['lost']}" if s1000 else "point 1000x20 not run"))
    busiest = max(smooth, key=lambda s: s["deliveries_per_s"], default=None)
    out.append(verdict("cpu_per_delivery", busiest["cpu_us_per_delivery"] if busiest else None,
                       f"at the busiest point {busiest['subscribers']}x{busiest['rate']:g}" if busiest else ""))
    return out


def _find(results: list[dict[str, Any]], subs: int, rate: float) -> dict[str, Any] | None:
    return next((r for r in results if r["subscribers"] == subs and r["rate"] == rate), None)
