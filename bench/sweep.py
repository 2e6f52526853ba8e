"""Max zero-loss rates: raise the offered rate until a point fails (fan-out, and many rooms).

Owns: the rate search for one system and one sender count (``search``), the pass/fail rule
of a point (``judge``), the Smooth and RabbitMQ series over the same search (``run``), the
Smooth/RabbitMQ ratio of the highest passing rates, and the headline fan-out target. And the
many-rooms sweep (``run_rooms``): the same search over the total SEND rate of ``bench rooms``
(C connections in C/2 DM rooms, the rate spread evenly), where a point passes with nothing
lost or doubled and p99 within ``ROOMS_BOUND_MS``.

A point is one ``fanout.fanout_once`` run (N subscribers, offered rate R split over K sender
connections, ``duration`` seconds of sending). It passes when nothing was lost, nothing was
duplicated, the senders really offered R (a sender whose socket is pushed back falls behind
its schedule), and the p99 SEND -> MESSAGE latency is within ``bound_ms``. The search starts
at ``start_rate``, doubles R until a point fails (halves it if the first point fails), then
bisects between the highest pass and the lowest fail until they are within 10 %. The result
is the highest passing R and the deliveries/s measured there. A failing point during which
other processes took more than 0.3 of a core is run once more (a disturbed point). Each series
starts on a freshly started system, and the system is restarted after every failing point, so
a backlog left by an overloaded point never runs into the next one.

The drain after a point's sending lasts at most ``bound_ms`` + 5 s. At an overloaded point,
deliveries still in the pipeline then are counted in ``lost`` and the verdict says
"undelivered": late, not necessarily dropped (``bench fanout`` drains for up to 60 s).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

from bench import fanout, rooms, servers
from bench.report import table, verdict
from bench.servers import RabbitPeer, SmoothStack
from bench.targets import RabbitTarget, SmoothTarget

__all__ = ["run", "run_rooms", "search", "judge"]

BOUND_MS = 1000.0
ROOMS_BOUND_MS = 100.0  # issue "Performance": the highest SEND rate with p99 <= 100 ms and nothing lost
GROWTH = 2.0
RESOLUTION = 1.10  # stop when lowest fail / highest pass <= this
SENT_FRACTION = 0.97  # senders must have sent at least this share of R x duration
DISTURBED_CORES = 0.3  # other processes' CPU (cores) during a window that makes a failing point suspect
POINT_COLUMNS = ["system", "subs", "senders", "rate", "offered_dps", "deliveries_per_s", "sent", "lost", "dups",
                 "p50_ms", "p99_ms", "max_ms", "cpu_us_per_delivery", "loadgen_cores", "other_cores", "verdict"]
SUMMARY_COLUMNS = ["subs", "senders", "smooth_max_rate", "smooth_max_dps", "smooth_p99_ms", "smooth_first_fail",
                   "rabbit_max_rate", "rabbit_max_dps", "rabbit_p99_ms", "rabbit_first_fail", "ratio_dps"]


def judge(point: dict[str, Any], rate: float, duration: float, bound_ms: float) -> str:
    """Why ``point`` fails, or "" when it passes."""
    if "error" in point:
        return f"error: {point['error'][:80]}"
    if point["lost"]:
        return f"undelivered {point['lost']:,} (drain ended)"
    if point["duplicates"]:
        return f"{point['duplicates']:,} duplicates"
    if point["sent"] < SENT_FRACTION * rate * duration:
        return f"senders behind: sent {point['sent']:,} of {rate * duration:,.0f}"
    if point["latency_ms"]["p99"] > bound_ms:
        return f"p99 {point['latency_ms']['p99']:,.0f} ms > {bound_ms:g}"
    return ""


def _other_cores(point: dict[str, Any]) -> float:
    if "error" in point:
        return 0.0
    return point["server_cpu_s"].get("other_processes", 0.0) / max(1e-9, point["window_s"])


def search(run_point: Callable[[float], dict[str, Any]], duration: float, start_rate: float = 25.0,
           bound_ms: float = BOUND_MS, max_rate: float = 5000.0, budget_s: float = 180.0,
           max_points: int = 0) -> dict[str, Any]:
    """Find the highest rate whose point passes; every point tried is kept in ``points``."""
    points: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    low_fail: tuple[float, str] | None = None
    rate = float(round(start_rate))
    deadline = time.monotonic() + budget_s
    stopped = "resolution"
    while True:
        if time.monotonic() > deadline:
            stopped = "budget"
            break
        if max_points and len(points) >= max_points:
            stopped = "max_points"
            break
        point = run_point(rate)
        reason = judge(point, rate, duration, bound_ms)
        if reason and _other_cores(point) > DISTURBED_CORES:
            point["verdict"] = f"disturbed ({_other_cores(point):.2f} cores of others), run again: {reason}"
            points.append(point)
            point = run_point(rate)
            reason = judge(point, rate, duration, bound_ms)
        point["verdict"] = reason or "pass"
        point["offered_rate"] = rate
        points.append(point)
        if reason:
            low_fail = (rate, reason) if low_fail is None or rate < low_fail[0] else low_fail
        elif best is None or rate > best["offered_rate"]:
            best = point
        if low_fail is None:
            if rate * GROWTH > max_rate:
                stopped = "max_rate"
                break
            rate = rate * GROWTH
        elif best is None:
            if rate <= 1:
                break
            rate = max(1.0, float(round(rate / GROWTH)))
        else:
            if low_fail[0] / best["offered_rate"] <= RESOLUTION:
                break
            nxt = float(round((best["offered_rate"] + low_fail[0]) / 2))
            if nxt in (best["offered_rate"], low_fail[0]):
                break
            rate = nxt
    return {"points": points, "max_rate": best["offered_rate"] if best else 0.0,
            "max_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
            "p99_at_max_ms": best["latency_ms"]["p99"] if best else None,
            "cpu_us_per_delivery_at_max": best["cpu_us_per_delivery"] if best else None,
            "first_fail_rate": low_fail[0] if low_fail else None,
            "first_fail_reason": low_fail[1] if low_fail else "", "stopped_by": stopped}


def point_row(point: dict[str, Any]) -> dict[str, Any]:
    if "error" in point:
        return {"system": point["system"], "subs": point.get("subscribers"), "rate": point["rate"],
                "verdict": _error_verdict(point)}
    return {"system": point["system"], "subs": point["subscribers"], "senders": point["senders"],
            "rate": point["rate"], "offered_dps": round(point["rate"] * point["subscribers"]), **_figures(point)}


def _figures(point: dict[str, Any]) -> dict[str, Any]:
    """What a measured point shows in its row, in a fan-out sweep and a rooms sweep alike."""
    lat = point["latency_ms"]
    window = max(1e-9, point["window_s"])
    return {"deliveries_per_s": point["deliveries_per_s"], "sent": point["sent"], "lost": point["lost"],
            "dups": point["duplicates"], "p50_ms": lat["p50"], "p99_ms": lat["p99"], "max_ms": lat["max"],
            "cpu_us_per_delivery": point["cpu_us_per_delivery"],
            "loadgen_cores": round(point["loadgen_cpu_s"] / window, 2),
            "other_cores": round(_other_cores(point), 2), "verdict": point.get("verdict", "")}


def _error_verdict(point: dict[str, Any]) -> str:
    return point.get("verdict", point["error"][:100])


class _System:
    """One system under test for a sweep series, restartable after a failing point."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.smooth: SmoothStack | None = None
        self.rabbit: RabbitPeer | None = None
        self.restarts = 0
        self._exit = contextlib.ExitStack()

    def start(self) -> "_System":
        self._exit = contextlib.ExitStack()
        if self.name == "smooth":
            self.smooth = self._exit.enter_context(SmoothStack(self.data_dir, mongo_in_memory=True).running())
        else:
            self.rabbit = self._exit.enter_context(RabbitPeer().running())
        return self

    def stop(self) -> None:
        self._exit.close()

    def restart(self) -> None:
        """A failing point leaves a backlog (queued SENDs, unconsumed records) that would run into
        the next point; start afresh instead (a RabbitMQ not started by the bench, or a system
        shared by ``--quick`` scenarios, only gets waited for)."""
        if servers.REUSE or (self.rabbit is not None and self.rabbit.process is None):
            return
        self.stop()
        self.start()
        self.restarts += 1

    @property
    def target(self) -> Any:
        if self.smooth is not None:
            assert self.smooth.settings is not None
            return SmoothTarget(self.smooth.chat_ports, self.smooth.settings.redis_url, self.smooth.settings.jwt_secret)
        assert self.rabbit is not None
        return RabbitTarget(self.rabbit.port)

    def pid_groups(self) -> dict[str, list[int]]:
        return self.smooth.pid_groups() if self.smooth is not None else self.rabbit.pid_groups()  # type: ignore[union-attr]

    @property
    def idle_pct(self) -> float:
        return self.smooth.idle_cpu_pct if self.smooth is not None else 0.0


def _series(system: _System, subscribers: int, senders: int, args: dict[str, Any],
            profile: bool = False) -> dict[str, Any]:
    def measure_point(rate: float) -> dict[str, Any]:
        return fanout.fanout_once(system.target, system.pid_groups, subscribers, rate, args["duration"], args["size"],
                                  args["procs"], profile and system.name == "smooth", senders, system.idle_pct,
                                  max_drain_s=_drain_s(args))

    found = _search_series(system, measure_point, args, f"sweep {system.name} {subscribers} subs, {senders} sender(s)",
                           point_row, POINT_COLUMNS)
    found.update(subscribers=subscribers, senders=senders)
    return found


def _drain_s(args: dict[str, Any]) -> float:
    return max(5.0, args["bound_ms"] / 1000 + 5)


def _search_series(system: _System, measure_point: Callable[[float], dict[str, Any]], args: dict[str, Any],
                   title: str, row: Callable[[dict[str, Any]], dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    """``search`` over one system: each point printed, the system restarted after a failing one."""
    duration = args["duration"]

    def run_point(rate: float) -> dict[str, Any]:
        try:
            point = measure_point(rate)
        except (RuntimeError, OSError, TimeoutError) as exc:
            point = {"system": system.name, "rate": rate, "error": str(exc)}
        point.setdefault("rate", rate)
        print(table(title, [row(point)], columns), flush=True)
        if judge(point, rate, duration, args["bound_ms"]):
            system.restart()
        return point

    found = search(run_point, duration, args["start_rate"], args["bound_ms"], args["max_rate"], args["budget_s"],
                   args["max_points"])
    found.update(system=system.name, bound_ms=args["bound_ms"], duration_s=duration, restarts=system.restarts)
    return found


def run(data_dir: Path, subscribers: int, senders_list: list[int], duration: float, size: int, procs: int,
        start_rate: float, bound_ms: float, budget_s: float, max_rate: float = 5000.0, max_points: int = 0,
        peer: bool = True, peer_only: bool = False, profile: bool = False) -> dict[str, Any]:
    args = {"duration": duration, "size": size, "procs": procs, "start_rate": start_rate, "bound_ms": bound_ms,
            "budget_s": budget_s, "max_rate": max_rate, "max_points": max_points}
    results: dict[str, list[dict[str, Any]]] = {"smooth": [], "rabbitmq": []}
    names = ([] if peer_only else ["smooth"]) + (["rabbitmq"] if peer else [])
    for name in names:
        for senders in senders_list:
            system = _System(name, data_dir).start()
            try:
                results[name].append(_series(system, subscribers, senders, args, profile))
            finally:
                system.stop()
    smooth, rabbit = results["smooth"], results["rabbitmq"]
    points = [p for s in smooth + rabbit for p in s["points"]]
    print(table("sweep: every point", [point_row(p) for p in points], POINT_COLUMNS), flush=True)
    summary = summarize(smooth, rabbit)
    print(table(f"sweep: max zero-loss rate with p99 <= {bound_ms:g} ms", summary, SUMMARY_COLUMNS), flush=True)
    return {"smooth": smooth, "rabbitmq": rabbit, "summary": summary, "targets": targets(summary)}


def summarize(smooth: list[dict[str, Any]], rabbit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for senders in sorted({s["senders"] for s in smooth + rabbit}):
        s = next((x for x in smooth if x["senders"] == senders), None)
        r = next((x for x in rabbit if x["senders"] == senders), None)
        row: dict[str, Any] = {"subs": (s or r or {}).get("subscribers"), "senders": senders}
        for key, found in (("smooth", s), ("rabbit", r)):
            if found:
                row.update({f"{key}_max_rate": found["max_rate"], f"{key}_max_dps": found["max_deliveries_per_s"],
                            f"{key}_p99_ms": found["p99_at_max_ms"],
                            f"{key}_first_fail": (f"{found['first_fail_rate']:g}: {found['first_fail_reason']}"
                                                  if found["first_fail_rate"] else f"none ({found['stopped_by']})")})
        if s and r and r["max_deliveries_per_s"]:
            row["ratio_dps"] = round(s["max_deliveries_per_s"] / r["max_deliveries_per_s"], 2)
        rows.append(row)
    return rows


def targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in summary:
        key = "fanout_ratio" if row["senders"] == 1 else "fanout_ratio_k"
        if "ratio_dps" not in row:
            out.append(verdict(key, None, f"{row['senders']} sender(s): not both systems measured"))
            continue
        note = (f"{row['senders']} sender(s): Smooth {row['smooth_max_dps']:,.0f}/s at {row['smooth_max_rate']:g} msg/s"
                f" vs RabbitMQ {row['rabbit_max_dps']:,.0f}/s at {row['rabbit_max_rate']:g} msg/s")
        out.append(verdict(key, row["ratio_dps"], note))
    return out


# -- many rooms ----------------------------------------------------------------------------------

ROOMS_POINT_COLUMNS = ["system", "connections", "rate", "offered_dps", "deliveries_per_s", "sent", "lost", "dups",
                       "p50_ms", "p99_ms", "max_ms", "cpu_us_per_delivery", "loadgen_cores", "other_cores",
                       "verdict"]
ROOMS_SUMMARY_COLUMNS = ["connections", "bound_ms", "smooth_max_rate", "smooth_p99_ms", "smooth_cpu_us_per_delivery",
                         "smooth_first_fail", "rabbit_max_rate", "rabbit_p99_ms", "rabbit_cpu_us_per_delivery",
                         "rabbit_first_fail"]


def rooms_point_row(point: dict[str, Any]) -> dict[str, Any]:
    """One many-rooms point; ``rate`` is SENDs per second in all (each goes to both members of its room)."""
    if "error" in point:
        return {"system": point["system"], "rate": point["rate"], "verdict": _error_verdict(point)}
    return {"system": point["system"], "connections": point["connections"], "rate": point["rate"],
            "offered_dps": round(point["rate"] * 2), **_figures(point)}


def run_rooms(data_dir: Path, conns: int, duration: float, size: int, procs: int, start_rate: float,
              bound_ms: float = ROOMS_BOUND_MS, budget_s: float = 600.0, max_rate: float = 16000.0,
              max_points: int = 0, peer: bool = True, peer_only: bool = False) -> dict[str, Any]:
    """The highest total SEND rate over ``conns`` connections in DM rooms that passes, per system."""
    conns -= conns % 2
    args = {"duration": duration, "start_rate": start_rate, "bound_ms": bound_ms, "budget_s": budget_s,
            "max_rate": max_rate, "max_points": max_points}
    found: dict[str, dict[str, Any]] = {}
    for name in ([] if peer_only else ["smooth"]) + (["rabbitmq"] if peer else []):
        system = _System(name, data_dir).start()
        try:
            found[name] = _search_series(
                system, lambda rate, system=system: rooms.once(
                    system.target, system.pid_groups, conns, rate / conns, max(duration, 2.0 * conns / rate), size,
                    procs, system.idle_pct, max_drain_s=_drain_s(args)),
                args, f"rooms sweep {name}, {conns:,} connections", rooms_point_row, ROOMS_POINT_COLUMNS)
        finally:
            system.stop()
    points = [p for series in found.values() for p in series["points"]]
    print(table("rooms sweep: every point", [rooms_point_row(p) for p in points], ROOMS_POINT_COLUMNS), flush=True)
    summary = {"connections": conns, "bound_ms": bound_ms}
    for key, name in (("smooth", "smooth"), ("rabbit", "rabbitmq")):
        series = found.get(name)
        if series:
            summary.update({f"{key}_max_rate": series["max_rate"], f"{key}_p99_ms": series["p99_at_max_ms"],
                            f"{key}_cpu_us_per_delivery": series["cpu_us_per_delivery_at_max"],
                            f"{key}_first_fail": (f"{series['first_fail_rate']:g}: {series['first_fail_reason']}"
                                                  if series["first_fail_rate"] else f"none ({series['stopped_by']})")})
    print(table(f"rooms sweep: highest SEND rate with nothing lost and p99 <= {bound_ms:g} ms", [summary],
                ROOMS_SUMMARY_COLUMNS), flush=True)
    return {"smooth": found.get("smooth"), "rabbitmq": found.get("rabbitmq"), "summary": summary}
