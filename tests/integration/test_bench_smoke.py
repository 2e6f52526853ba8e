"""Smoke runs of every bench command (tiny sizes, a few seconds each): they run and print figures.

Benchmarks are not tests: nothing here judges a figure beyond "something was delivered and
nothing was lost". ``--quick`` means 10-20 connections, 2 s windows, 1,000 messages for the
history queries and short settling waits. To keep the file near a minute, the scenarios run
in one ``python -m bench fanout sweep rooms rooms-sweep idle presence history scale --quick`` child
process (own SMOOTH_DATA_DIR), where they share one running system per configuration (a
``--quick`` only shortcut; real runs start fresh systems per scenario). Each test then checks
its scenario's printed table and saved raw JSON. The RabbitMQ Web-STOMP peer runs in fan-out,
sweep and rooms when ``rabbitmq-server`` is installed (a Debian package; see bench/README.md),
and is skipped with ``--no-peer`` otherwise. ``seed`` (persistent store) and ``resume`` (100
events, 3 timed replays; a few seconds) run on their own, so ``-k resume`` starts only its system.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import REPO

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
CHAT_BUILT = (REPO / "gunicorn.conf.py").exists()
needs_chat = pytest.mark.skipif(not CHAT_BUILT, reason="chat server not built yet (no gunicorn.conf.py)")
SCENARIOS = ["fanout", "sweep", "rooms", "rooms-sweep", "idle", "presence", "history", "scale"]
TIMEOUT_S = 200  # all of SCENARIOS in one process: about 70 s on an idle 2-core machine


def bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]:
    """Run ``python -m bench <args> --quick``; the raw JSON of each scenario that saved one, by name."""
    env = {**os.environ, "SMOOTH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench", *args, "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    saved = {Path(p).name.rsplit("-", 2)[0]: json.loads(Path(p).read_text())
             for p in re.findall(r"raw results: (\S+)", done.stdout)}
    return done, saved


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[str, Any]], str]:
    if not CHAT_BUILT:
        pytest.skip("chat server not built yet (no gunicorn.conf.py)")
    done, saved = bench(tmp_path_factory.mktemp("bench"), *SCENARIOS, *([] if RABBIT else ["--no-peer"]))
    return done.stdout, saved, done.stdout[-3000:] + done.stderr[-3000:]


def scenario(quick_run: tuple[str, dict[str, dict[str, Any]], str], name: str) -> tuple[str, dict[str, Any]]:
    out, saved, tail = quick_run
    assert name in saved, tail
    assert "error" not in saved[name], (saved[name]["error"], tail)
    return out, saved[name]


def assert_delivered(run: dict[str, Any]) -> None:
    assert "error" not in run, run.get("error")
    assert run["delivered"] > 0 and run["lost"] == 0 and run["duplicates"] == 0, {
        k: run.get(k) for k in ("system", "sent", "delivered", "lost", "duplicates")}


def test_fanout_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "fanout")
    assert "deliveries_per_s" in out
    assert_delivered(raw["smooth"][0])
    if RABBIT:
        assert_delivered(raw["rabbitmq"][0])
        assert "Smooth / RabbitMQ" in out and raw["ratios"]


def test_sweep_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "sweep")
    assert "max zero-loss rate" in out
    systems = ["smooth", "rabbitmq"] if RABBIT else ["smooth"]
    for system in systems:
        series = raw[system][0]
        assert series["points"] and series["max_rate"] > 0, series
        for point in series["points"]:
            assert_delivered(point)
    if RABBIT:
        assert raw["summary"][0]["ratio_dps"] > 0
        assert any(t["target"].startswith("max zero-loss") for t in raw["targets"])


def test_rooms_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "rooms")
    assert "many rooms" in out
    for run in raw["runs"]:
        assert_delivered(run)


def test_rooms_sweep_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "rooms-sweep")
    assert "highest SEND rate with nothing lost and p99 <= 100 ms" in out
    for system in ["smooth", "rabbitmq"] if RABBIT else ["smooth"]:
        series = raw[system]
        assert series["points"] and series["max_rate"] > 0, series
        for point in series["points"]:
            assert_delivered(point)
    assert raw["summary"]["smooth_max_rate"] > 0


def test_idle_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "idle")
    assert raw["levels"][0]["held"] == 20 and "rss_per_conn_kb" in out
    assert "records_read_idle" in out  # read off the worker's /metrics (the bench fails if it is not there)


def test_presence_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "presence")
    assert "requests_per_s" in out
    assert raw["requests"] > 0 and raw["errors"] == 0


def test_history_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "history")
    assert raw["stored_messages"] >= 1000 and "message-count" in out
    assert raw["page0"]["count"] > 0 and raw["page0_status"].get("200") == raw["page0"]["count"]
    assert raw["count100"]["count"] > 0 and raw["count100_status"].get("200") == raw["count100"]["count"]


def test_scale_prints_figures(quick_run: Any) -> None:
    out, raw = scenario(quick_run, "scale")  # --quick: one system of 2 nodes x 2 workers
    assert "fan-out scaling" in out
    assert [(r["workers"], r["nodes"]) for r in raw["runs"]] == [(2, 2)]
    assert_delivered(raw["runs"][0])
    assert raw["runs"][0]["subscribers_missing_any"] == 0


def test_seed_prints_figures(tmp_path: Path) -> None:
    done, saved = bench(tmp_path, "seed")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert saved["seed"]["messages"] == 1000 and "docs_per_s_last_run" in done.stdout


@needs_chat
def test_resume_prints_figures(tmp_path: Path) -> None:
    done, saved = bench(tmp_path, "resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    raw = saved["resume"]
    assert raw["fill"]["events"] == {"message": 90, "modify": 6, "delete": 4}
    assert raw["runs"] == 3 and raw["failed"] == 0, raw["failures"]
    assert raw["replay_ms"]["p50"] > 0 and raw["events_per_s"] > 0
    assert "SUBSCRIBE since-seq:0" in done.stdout and raw["targets"][0]["verdict"] in ("PASS", "MISS")
