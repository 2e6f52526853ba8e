"""Smoke runs of every bench command (tiny sizes, a few seconds each): they run and print figures.

Benchmarks are not tests: nothing here judges a figure beyond "something was delivered and
nothing was lost". Each test runs ``python -m bench <scenario> --quick`` in a child process
with its own SMOOTH_DATA_DIR and checks the exit status, the printed table and the saved raw
JSON. ``--quick`` means 10-20 connections, 2 s windows, 1,000 seeded messages and short
settling waits, so the whole file takes about a minute (most of it is starting servers).
Only the fan-out test also runs the RabbitMQ Web-STOMP peer (when ``rabbitmq-server`` is
installed, a Debian package; see bench/README.md); the others run with ``--no-peer``.
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

pytestmark = pytest.mark.integration

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
CHAT_BUILT = (REPO / "gunicorn.conf.py").exists()
needs_chat = pytest.mark.skipif(not CHAT_BUILT, reason="chat server not built yet (no gunicorn.conf.py)")
TIMEOUT_S = 60  # one scenario; a quick run takes 3-20 s


def bench(scenario: str, tmp_path: Path, *extra: str) -> tuple[str, dict[str, Any]]:
    env = {**os.environ, "SMOOTH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench", scenario, "--quick", *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = re.findall(r"raw results: (\S+)", done.stdout)
    assert saved, done.stdout
    return done.stdout, json.loads(Path(saved[-1]).read_text())


def assert_delivered(run: dict[str, Any]) -> None:
    assert "error" not in run, run.get("error")
    assert run["delivered"] > 0 and run["lost"] == 0 and run["duplicates"] == 0, {
        k: run.get(k) for k in ("system", "sent", "delivered", "lost", "duplicates")}


def test_presence_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("presence", tmp_path)
    assert "requests_per_s" in out
    assert raw["requests"] > 0 and raw["errors"] == 0


def test_seed_and_history_print_figures(tmp_path: Path) -> None:
    out, raw = bench("seed", tmp_path)
    assert raw["messages"] == 1000 and "docs_per_s_last_run" in out
    if CHAT_BUILT:
        out, raw = bench("history", tmp_path)
        assert raw["page0"]["count"] > 0 and raw["page0_status"].get("200") == raw["page0"]["count"]
        assert raw["count100"]["count"] > 0 and "message-count" in out


@needs_chat
def test_fanout_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("fanout", tmp_path, *([] if RABBIT else ["--no-peer"]))
    assert "deliveries_per_s" in out
    assert_delivered(raw["smooth"][0])
    if RABBIT:
        assert_delivered(raw["rabbitmq"][0])
        assert "Smooth / RabbitMQ" in out and raw["ratios"]


@needs_chat
def test_scale_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("scale", tmp_path)  # --quick: one stack, 2 nodes x 2 workers
    assert "fan-out scaling" in out
    assert [(r["workers"], r["nodes"]) for r in raw["runs"]] == [(2, 2)]
    assert_delivered(raw["runs"][0])
    assert raw["runs"][0]["subscribers_missing_any"] == 0


@needs_chat
def test_rooms_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("rooms", tmp_path, "--rate", "2", "--no-peer")
    assert "many rooms" in out
    assert_delivered(raw["runs"][0])


@needs_chat
def test_idle_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("idle", tmp_path)
    assert raw["levels"][0]["held"] == 20 and "rss_per_conn_kb" in out
