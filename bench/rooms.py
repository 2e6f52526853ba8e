"""Many-rooms scenario: C connections in C/2 DM rooms, each sending at r msg/s into its room.

Owns: the rooms run on Smooth (and, unless told not to, the same client against RabbitMQ
with one topic per room), whose point is the latency distribution when load is spread over
thousands of small rooms instead of one big one. Every member of a room, the sender
included, must receive each message once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure import cpu_figures, measure, next_base, split, wait_quiet
from bench.report import table
from bench.servers import RabbitPeer, SmoothStack
from bench.targets import RabbitTarget, SmoothTarget

__all__ = ["run"]

COLUMNS = ["system", "connections", "rooms", "rate_per_conn", "sent", "delivered", "lost", "dups",
           "deliveries_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_us_per_delivery", "loadgen_cpu_s",
           "other_cpu_s"]


def _peers(conn: dict[str, Any]) -> list[int]:
    base = conn["id"] - conn["id"] % 2
    return [base, base + 1]


def once(target: Any, pid_groups: Any, conns: int, rate: float, duration: float, size: int,
         procs: int, idle_pct: float = 0.0, profile: bool = False, max_drain_s: float = 60.0) -> dict[str, Any]:
    quiet_s = wait_quiet([p for pids in pid_groups().values() for p in pids], busy_pct=idle_pct + 15)
    specs = target.rooms_specs(conns, rate, size, next_base())
    groups = split(specs, procs or max(1, min(4, conns // 1500 + 1)))
    result = measure(groups, pid_groups, duration, deliveries_per_send=2, senders_of=_peers,
                     max_drain_s=max_drain_s, profile=f"profile-rooms-{conns}" if profile else "")
    result.update(system=target.name, rooms=conns // 2, rate_per_conn=rate, duration_s=duration,
                  waited_for_quiet_s=quiet_s)
    result.update(cpu_figures(result, ["chat_workers"] if target.name == "smooth" else ["rabbitmq"]))
    return result


def row(result: dict[str, Any]) -> dict[str, Any]:
    lat = result["latency_ms"]
    return {**result, "dups": result["duplicates"], "p50_ms": lat["p50"], "p90_ms": lat["p90"],
            "p99_ms": lat["p99"], "max_ms": lat["max"],
            "other_cpu_s": result["server_cpu_s"].get("other_processes", 0.0)}


def run(data_dir: Path, conns: int, rate: float, duration: float, size: int, procs: int,
        peer: bool = True, profile: bool = False) -> dict[str, Any]:
    conns -= conns % 2
    duration = max(duration, 2.0 / rate) if rate else duration
    with SmoothStack(data_dir, mongo_in_memory=True).running() as stack:
        assert stack.settings is not None
        target = SmoothTarget(stack.chat_ports, stack.settings.redis_url, stack.settings.jwt_secret)
        results = [once(target, stack.pid_groups, conns, rate, duration, size, procs, stack.idle_cpu_pct, profile)]
        results[0]["workers_idle_cpu_pct"] = stack.idle_worker_cpu_pct
    print(table("many rooms", [row(results[0])], COLUMNS), flush=True)
    if peer:
        with RabbitPeer().running() as rabbit:
            results.append(once(RabbitTarget(rabbit.port), rabbit.pid_groups, conns, rate, duration, size, procs))
        print(table("many rooms", [row(r) for r in results], COLUMNS), flush=True)
    return {"runs": results}
