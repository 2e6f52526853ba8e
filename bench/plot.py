"""Pictures of saved bench results: ``python -m bench plot`` (``make bench`` runs it after the benches).

Owns: picking, per scenario, the newest saved result under ``bench/results/`` (a full run over a
``--quick`` smoke run, whatever their dates), the series drawn from them, and two PNGs:

- ``latency.png``: p50 / p90 / p99 of each fan-out point and of the many-rooms scenario, Smooth
  beside RabbitMQ (log scale: fan-out is tens of ms, a saturated many-rooms run seconds);
- ``throughput.png``: deliveries per second of each fan-out point and the sweep's maximum
  zero-loss rate per sender count, Smooth beside RabbitMQ.

A system absent from the results (``--no-peer`` runs) is named as such under the title. Renders
with matplotlib's Agg backend from the JSON alone, so it runs without any bench running.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR

__all__ = ["newest_results", "latency_groups", "throughput_groups", "render", "main", "PLOTS_DIR", "SYSTEMS"]

PLOTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "bench"
SCENARIOS = ("fanout", "sweep", "rooms")
SYSTEMS = {"smooth": ("Smooth", "#2b6cb0"), "rabbitmq": ("RabbitMQ Web-STOMP", "#dd6b20")}
PERCENTILES = ("p50", "p90", "p99")


@dataclass
class Group:
    """One cluster of bars: a label and, per system, its figures."""

    label: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Picked:
    path: Path
    data: dict[str, Any]

    @property
    def quick(self) -> bool:
        return bool(self.data.get("args", {}).get("quick"))


def newest_results(results_dir: Path) -> dict[str, Picked]:
    """Per scenario, the newest full run (the newest smoke run when there is none)."""
    picked: dict[str, Picked] = {}
    for scenario in SCENARIOS:
        # Saved as <scenario>-<YYYYmmdd-HHMMSS>.json: the name orders them in time.
        runs = [Picked(path, json.loads(path.read_text())) for path in sorted(results_dir.glob(f"{scenario}-*.json"))]
        runs = [run for run in runs if "error" not in run.data]
        if runs:
            full = [run for run in runs if not run.quick]
            picked[scenario] = (full or runs)[-1]
    return picked


def latency_groups(picked: dict[str, Picked]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in _runs(picked.get("fanout"), ("smooth", "rabbitmq")):
        label = f"fan-out\n{run['subscribers']:,} subs x {run['rate']:g}/s"
        groups.setdefault(label, Group(label)).values[run["system"]] = _percentiles(run)
    for run in _runs(picked.get("rooms"), ("runs",)):
        label = f"many rooms\n{run.get('connections', 0):,} conns"
        groups.setdefault(label, Group(label)).values[run["system"]] = _percentiles(run)
    return list(groups.values())


def throughput_groups(picked: dict[str, Picked]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in _runs(picked.get("fanout"), ("smooth", "rabbitmq")):
        label = f"fan-out\n{run['subscribers']:,} subs x {run['rate']:g}/s"
        groups.setdefault(label, Group(label)).values[run["system"]] = {"value": run["deliveries_per_s"]}
    for series in _runs(picked.get("sweep"), ("smooth", "rabbitmq")):
        label = f"max zero-loss\n{series['subscribers']} subs, {series['senders']} sender(s)"
        groups.setdefault(label, Group(label)).values[series["system"]] = {"value": series["max_deliveries_per_s"] or 0}
    return list(groups.values())


def _runs(run: Picked | None, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    if run is None:
        return []
    return [item for key in keys for item in run.data.get(key) or [] if item.get("system") in SYSTEMS]


def _percentiles(run: dict[str, Any]) -> dict[str, float]:
    return {name: run["latency_ms"][name] for name in PERCENTILES}


def render(results_dir: Path = RESULTS_DIR, out_dir: Path = PLOTS_DIR) -> list[Path]:
    """Draw both pictures from the newest results in ``results_dir`` into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    picked = newest_results(results_dir)
    if not picked:
        raise FileNotFoundError(f"no fanout, sweep or rooms results in {results_dir}: run `make bench` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    caption = _caption(picked)
    latency = _bars(latency_groups(picked), PERCENTILES, "latency, SEND to MESSAGE (ms, log scale)",
                    "Latency percentiles", caption)
    throughput = _bars(throughput_groups(picked), ("value",), "deliveries per second (log scale)",
                       "Deliveries per second", caption)
    paths = [out_dir / "latency.png", out_dir / "throughput.png"]
    for figure, path in zip((latency, throughput), paths):
        # No creation date in the file: the same results give the same picture.
        figure.savefig(path, dpi=110, metadata={"Software": None})
    return paths


def _bars(groups: list[Group], figures: tuple[str, ...], ylabel: str, title: str, caption: str) -> Any:
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(max(6.0, 2.2 * len(groups) + 2), 4.6))
    present = [system for system in SYSTEMS if any(system in group.values for group in groups)]
    width = 0.8 / max(1, len(present) * len(figures))
    for s, system in enumerate(present):
        name, color = SYSTEMS[system]
        for f, figure_name in enumerate(figures):
            offset = (s * len(figures) + f) * width - 0.4 + width / 2
            xs = [i + offset for i, group in enumerate(groups) if system in group.values]
            ys = [group.values[system][figure_name] for group in groups if system in group.values]
            label = name if len(figures) == 1 else f"{name} {figure_name}"
            bars = axes.bar(xs, ys, width, color=color, alpha=1.0 - 0.28 * f, label=label)
            axes.bar_label(bars, fmt="{:,.0f}" if len(figures) == 1 else "{:,.1f}", fontsize=7, padding=1)
    axes.set_xticks(range(len(groups)), [group.label for group in groups], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel(ylabel)
    missing = [SYSTEMS[system][0] for system in SYSTEMS if system not in present]
    axes.set_title(title + (f"\n({', '.join(missing)}: not in these results)" if missing else ""), fontsize=10)
    axes.legend(fontsize=7, loc="upper left")
    figure.text(0.01, 0.01, caption, fontsize=6, color="#555")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def _caption(picked: dict[str, Picked]) -> str:
    parts = [f"{run.path.name}{' (--quick)' if run.quick else ''}" for run in picked.values()]
    machine = next(iter(picked.values())).data.get("machine", {})
    return f"from {', '.join(parts)}; {machine.get('cpus', '?')} CPUs, {machine.get('cpu_model', '')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the saved results are")
    parser.add_argument("--out", type=Path, default=PLOTS_DIR, help="where the PNGs go")
    args = parser.parse_args(argv)
    for path in render(args.results, args.out):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
