"""The bench CLI: ``python -m bench [scenario] [flags]``; no scenario runs them all (``make bench``).
``python -m bench plot`` draws the saved results instead (bench/plot.py; ``make bench`` runs it last).

Owns: the command line (one sub-command per scenario: fanout, sweep, scale, rooms, idle,
seed, history, presence, resume, all; and ``soak`` and ``rooms-sweep``, which ``all`` does not
run), raising the open-files limit, the data directories under
``<SMOOTH_DATA_DIR>/bench/``, saving every result under bench/results/ and the final
targets table with machine info. ``--quick`` makes every scenario tiny and shortens the
sampling and settling waits (the smoke tests: seconds per scenario); several scenarios named
in one ``--quick`` invocation share one running system per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, Callable

from app.settings import Settings
from bench import procstat, servers
from bench.report import print_targets, save, table

SCENARIOS = ["fanout", "sweep", "scale", "rooms", "idle", "seed", "history", "presence", "resume"]
# Run only when named: the churn-and-hostile soak measures memory, not a target.
EXTRA_SCENARIOS = ["soak", "rooms-sweep"]


def data_dir(name: str) -> Path:
    return (Path(Settings.from_env().data_dir) / "bench" / name).resolve()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cmd_fanout(args: argparse.Namespace) -> dict[str, Any]:
    from bench import fanout

    points = [(args.subs, args.rate)] if args.subs else (
        [(20, 50)] if args.quick else fanout.POINTS)
    smooth = [] if args.peer_only else fanout.run_smooth(points, args.duration, args.size, data_dir("fanout"),
                                                         procs=args.procs, profile=args.profile,
                                                         senders=args.senders)
    rabbit = [] if args.no_peer else fanout.run_rabbit(points, args.duration, args.size, procs=args.procs,
                                                       senders=args.senders)
    rows = [fanout.row(r) for r in smooth + rabbit]
    print(table("fan-out, Smooth vs RabbitMQ Web-STOMP", rows, fanout.COLUMNS))
    ratios = fanout.ratios(smooth, rabbit)
    if ratios:
        print(table("Smooth / RabbitMQ", ratios, list(ratios[0])))
    return {"smooth": smooth, "rabbitmq": rabbit, "ratios": ratios, "targets": fanout.targets(smooth, rabbit)}


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from bench import sweep

    senders = [int(x) for x in (args.sweep_senders or ("1" if args.quick else "1,8")).split(",")]
    return sweep.run(data_dir("sweep"), args.subs or (10 if args.quick else 200), senders,
                     args.duration, args.size, args.procs, args.rate or (20 if args.quick else 25),
                     args.bound_ms or sweep.BOUND_MS, args.sweep_budget or 180.0, max_points=2 if args.quick else 0,
                     peer=not args.no_peer, peer_only=args.peer_only, profile=args.profile)


def cmd_rooms_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from bench import sweep

    conns = args.conns or (10 if args.quick else 2000)
    return sweep.run_rooms(data_dir("rooms-sweep"), conns, args.duration, args.size, args.procs,
                           args.rate or (20 if args.quick else 250), args.bound_ms or sweep.ROOMS_BOUND_MS,
                           args.sweep_budget or 900.0,
                           max_points=2 if args.quick else 0, peer=not args.no_peer, peer_only=args.peer_only)


def cmd_scale(args: argparse.Namespace) -> dict[str, Any]:
    from bench import fanout

    point = (args.subs or (10 if args.quick else 1000), args.rate or (20 if args.quick else 100))
    runs = []
    for workers, nodes in parse_configs(args.configs or ("2x2" if args.quick else "1x1,2x1,1x2")):
        runs.extend(fanout.run_smooth([point], args.duration, args.size, data_dir(f"scale-{workers}w{nodes}n"),
                                      workers=workers, nodes=nodes, procs=args.procs, senders=args.senders))
    rows = [{**fanout.row(r), "workers": r["workers"], "nodes": r["nodes"],
             "subs_missing_any": r["subscribers_missing_any"]} for r in runs]
    print(table("fan-out scaling (Smooth)", rows, ["workers", "nodes"] + fanout.COLUMNS + ["subs_missing_any"]))
    return {"runs": runs}


def parse_configs(text: str) -> list[tuple[int, int]]:
    """``"1x1,2x1,1x2"`` -> [(workers, nodes), ...]."""
    out = []
    for item in text.split(","):
        workers, _, nodes = item.strip().partition("x")
        out.append((int(workers), int(nodes or 1)))
    return out


def cmd_rooms(args: argparse.Namespace) -> dict[str, Any]:
    from bench import rooms

    conns = args.conns or (10 if args.quick else 5000)
    return rooms.run(data_dir("rooms"), conns, args.rate or (2.0 if args.quick else 0.2), args.duration, args.size, args.procs,
                     peer=not args.no_peer, profile=args.profile)


def cmd_idle(args: argparse.Namespace) -> dict[str, Any]:
    from bench import idle

    levels = [args.conns] if args.conns else ([20] if args.quick else [1000, 5000, 10000])
    return idle.run(data_dir("idle"), levels, args.procs)


def cmd_seed(args: argparse.Namespace) -> dict[str, Any]:
    from bench import history

    return history.seed(data_dir("history"), args.messages or (1000 if args.quick else 1_000_000),
                        time_budget_s=args.seed_budget)


def cmd_history(args: argparse.Namespace) -> dict[str, Any]:
    from bench import history

    if args.quick:  # 1,000 messages inserted into an in-memory store (seeding is `seed`'s smoke)
        result = history.run(data_dir("history"), 6, in_memory=1000)
    else:
        result = history.run(data_dir("history"), args.requests)
    result["targets"] = history.targets(result)
    return result


def cmd_presence(args: argparse.Namespace) -> dict[str, Any]:
    from bench import presence

    return presence.run(data_dir("presence"), args.conns or 50, args.duration, max(1, args.procs or 1))


def cmd_soak(args: argparse.Namespace) -> dict[str, Any]:
    from bench import soak

    return soak.run(data_dir("soak"), args.rounds or (2 if args.quick else 10), args.conns or (5 if args.quick else 200))


def cmd_resume(args: argparse.Namespace) -> dict[str, Any]:
    from bench import resume

    result = resume.run(data_dir("resume"), args.events or (100 if args.quick else 1000),
                        args.repeats or (3 if args.quick else 50), args.size, profile=args.profile,
                        warmup=1 if args.quick else resume.WARMUP)
    result["targets"] = resume.targets(result)
    return result


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "fanout": cmd_fanout, "sweep": cmd_sweep, "scale": cmd_scale, "rooms": cmd_rooms, "idle": cmd_idle,
    "seed": cmd_seed, "history": cmd_history, "presence": cmd_presence, "soak": cmd_soak, "resume": cmd_resume,
    "rooms-sweep": cmd_rooms_sweep,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenario", nargs="*", default=["all"], choices=SCENARIOS + EXTRA_SCENARIOS + ["all"],
                        help="one or more scenarios (default all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few seconds (smoke run)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of sending per point")
    parser.add_argument("--subs", type=int, default=0, help="fan-out: subscribers (one point instead of the list)")
    parser.add_argument("--rate", type=float, default=0,
                        help="fan-out: sender msg/s; sweep: first rate tried; rooms: msg/s per connection")
    parser.add_argument("--conns", type=int, default=0, help="rooms/idle/presence: connections; soak: per round")
    parser.add_argument("--size", type=int, default=64, help="message content characters")
    parser.add_argument("--procs", type=int, default=0, help="load-generator processes (0 = by size)")
    parser.add_argument("--senders", type=int, default=1,
                        help="fan-out: sender connections sharing --rate (default 1, the issue's scenario)")
    parser.add_argument("--profile", action="store_true",
                        help="fan-out, rooms: py-spy the chat worker(s) over each point; resume: over "
                             "10 s of replays after the figures -> bench/results/profile-*.txt")
    parser.add_argument("--bound-ms", type=float, default=None,
                        help="sweep: p99 bound of a passing point (fan-out 1000, rooms-sweep 100)")
    parser.add_argument("--sweep-senders", default="", help="sweep: sender counts, one series each (default 1,8)")
    parser.add_argument("--sweep-budget", type=float, default=None,
                        help="sweep: seconds per series (system x sender count) before it stops searching")
    parser.add_argument("--configs", default="",
                        help="scale: WORKERSxNODES,... (default 1x1,2x1,1x2; --quick: 2x2)")
    parser.add_argument("--no-peer", action="store_true", help="skip RabbitMQ")
    parser.add_argument("--peer-only", action="store_true", help="only RabbitMQ (fan-out)")
    parser.add_argument("--messages", type=int, default=0, help="seed: stored messages (default 1,000,000)")
    parser.add_argument("--seed-budget", type=float, default=1800.0, help="seed: stop after this many seconds")
    parser.add_argument("--requests", type=int, default=200, help="history: requests per query")
    parser.add_argument("--rounds", type=int, default=0, help="soak: rounds of churn and hostile input (default 10)")
    parser.add_argument("--events", type=int, default=0, help="resume: events in the room (default 1,000)")
    parser.add_argument("--repeats", type=int, default=0, help="resume: timed replays (default 50)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.quick:
        quick_timings()
    return args


def quick_timings() -> None:
    """Shorter sampling and settling for smoke runs (the figures are not the point there)."""
    from bench import idle, measure, servers

    servers.IDLE_SAMPLE_S = 0.5
    measure.QUIET_SAMPLE_S = 0.5
    measure.DRAIN_IDLE_S = 1.5
    idle.SETTLE_S = 0.5
    idle.IDLE_WINDOW_S = 1.0


def server_env() -> dict[str, str]:
    """Server settings given through the environment (the bench's systems inherit them)."""
    import dataclasses

    names = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    return {k: v for k, v in os.environ.items() if k in names}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:  # not a scenario: runs nothing, draws what was saved
        from bench import plot

        return plot.main(argv[1:])
    args = parse(argv)
    raise_nofile()
    names = [s for s in SCENARIOS if s != "seed"] if "all" in args.scenario else list(args.scenario)
    if "all" in args.scenario:
        names.insert(names.index("history"), "seed")
    servers.REUSE = args.quick and len(names) > 1
    verdicts: list[dict[str, Any]] = []
    failed = []
    try:
        for name in names:
            try:
                result = COMMANDS[name](args)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                failed.append(name)
                print(f"!! {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["machine"] = procstat.machine_info()
            result["args"] = vars(args)
            result["server_env"] = server_env()
            print(f"raw results: {save(name, result)}", flush=True)
            verdicts.extend(result.get("targets", []))
    finally:
        servers.stop_shared()
    print(json.dumps({"machine": procstat.machine_info(), "failed": failed}))
    if verdicts:
        print(print_targets(verdicts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
