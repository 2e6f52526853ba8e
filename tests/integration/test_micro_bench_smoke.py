"""Smoke runs of the micro-benchmarks (``bench.kafka_micro``, ``bench.outbox_micro``,
``bench.db_micro``): each runs at a tiny size and reports figures over real work.

Their stand-ins (a delivery that only stamps arrivals, a subscriber that only counts bytes)
copy interfaces of the server's own classes; when one of those changes, the micro-benchmark
must fail here rather than print figures over nothing (``kafka_micro``'s consume scenario did
that from the resume issue until the fourteenth session). Figures are not judged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO

TIMEOUT_S = 180


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_kafka_micro_measures_records_in_every_scenario(tmp_path: Path) -> None:
    report = tmp_path / "kafka-micro.json"
    run("bench.kafka_micro", "--repeat", "1", "--seconds", "1", "--warmup", "0.5", "--rates", "200",
        "--produce-rate", "50", "--burst", "10", "--json", str(report))
    rows = {row["scenario"]: row for row in json.loads(report.read_text())["medians"]}
    assert set(rows) == {"idle, 1 consumer(s)", "produce steady 50/s", "produce bursts of 10", "consume 200/s"}
    for name, row in rows.items():
        if not name.startswith("idle"):
            assert row["records"] > 0 and row["us_per_record"] > 0, row
    assert rows["consume 200/s"]["p99_ms"] > 0


def test_outbox_micro_delivers_in_every_case() -> None:
    out = run("bench.outbox_micro", "--subs", "20", "--events", "3", "--repeat", "1").stdout
    cases = {line.rsplit(None, 4)[0]: [float(x) for x in line.split()[-4:]]
             for line in out.splitlines() if line.startswith(("offer", "deliver", "ws-"))}
    assert {"offer burst=1", "deliver burst=1", "ws-raw burst=1", "ws-sockjs burst=1"} <= set(cases), out
    assert all(figures[3] >= 1.0 for figures in cases.values()), out  # frames per write: something was written


def test_db_micro_runs_every_step() -> None:
    out = run("bench.db_micro", "--rounds", "5", "--per-round", "2").stdout
    steps = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert steps == ["number", "store", "keep", "publish", "total"], out
