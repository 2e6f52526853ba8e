"""Figures out of raw measurements, targets, the printed tables and the saved JSON.

Owns: latency percentiles, the issue's targets (``TARGETS``) and their PASS/MISS verdicts,
fixed-width tables, and writing each scenario's raw result to ``bench/results/<name>-<time>.json``.
"""

from __future__ import annotations

import json
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["percentiles", "table", "save", "Target", "verdict", "RESULTS_DIR"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentiles(values_ns: array | list[int], scale: float = 1e6) -> dict[str, float | int]:
    """p50/p90/p99/max (in ms for ns input by default) and the count."""
    ordered = sorted(values_ns)
    if not ordered:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / scale, 3)

    return {"count": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99),
            "max": round(ordered[-1] / scale, 3)}


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A fixed-width text table of ``columns`` picked from ``rows``."""
    cells = [[_fmt(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    line = "  ".join(col.ljust(w) for col, w in zip(columns, widths))
    out = [f"== {title}", line, "  ".join("-" * w for w in widths)]
    out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells)
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: a name, the threshold text and how to judge a figure."""

    name: str
    threshold: str
    ok: Callable[[float], bool]


TARGETS = {
    "fanout_ratio": Target("max zero-loss fan-out deliveries/s (p99 <= 1 s), 200 subs, 1 sender: Smooth/RabbitMQ",
                           ">= 2.0", lambda v: v >= 2.0),
    "fanout_ratio_k": Target("the same with K sender connections (not the issue's scenario; for reference)",
                             ">= 2.0", lambda v: v >= 2.0),
    "fanout_p99": Target("fan-out p99 latency, 1,000 subs x 20 msg/s (ms)", "<= 50", lambda v: v <= 50),
    "cpu_per_delivery": Target("server CPU per delivery, chat workers (us)", "<= 25", lambda v: v <= 25),
    "idle_conns": Target("idle connections held by one worker", ">= 10,000", lambda v: v >= 10_000),
    "idle_rss": Target("RSS per idle connection at 10k (KB)", "<= 25", lambda v: v <= 25),
    "history_p99": Target("history page of 50, p99 (ms)", "<= 10", lambda v: v <= 10),
    "count_100": Target("message-count for 100 rooms, p99 (ms)", "<= 50", lambda v: v <= 50),
    "resume_p99": Target("resume: replay of 1,000 events (SUBSCRIBE since-seq:0), p99 (ms)", "<= 50",
                         lambda v: v <= 50),
}


def verdict(key: str, measured: float | None, note: str = "") -> dict[str, Any]:
    target = TARGETS[key]
    status = "n/a" if measured is None else ("PASS" if target.ok(measured) else "MISS")
    return {"target": target.name, "threshold": target.threshold,
            "measured": "-" if measured is None else measured, "verdict": status, "note": note}


def print_targets(verdicts: Iterable[dict[str, Any]]) -> str:
    return table("targets", list(verdicts), ["target", "threshold", "measured", "verdict", "note"])


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
