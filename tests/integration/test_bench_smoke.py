"""Smoke runs of every bench command (tiny sizes, a few seconds): they run and print figures.

Benchmarks are not tests: nothing here judges a figure. Each test runs
``python -m bench <scenario> --quick`` in a child process with its own SMOOTH_DATA_DIR and
checks the exit status, the printed table and the saved raw JSON. The fan-out command also
runs the RabbitMQ Web-STOMP peer when ``rabbitmq-server`` is installed (a Debian package;
see bench/README.md), and otherwise runs Smooth alone with ``--no-peer``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO

pytestmark = pytest.mark.integration

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
CHAT_BUILT = (REPO / "gunicorn.conf.py").exists()
needs_chat = pytest.mark.skipif(not CHAT_BUILT, reason="chat server not built yet (no gunicorn.conf.py)")


def bench(scenario: str, tmp_path: Path, *extra: str, timeout: float = 170) -> tuple[str, dict]:
    env = {**os.environ, "SMOOTH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench", scenario, "--quick", *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = re.findall(r"raw results: (\S+)", done.stdout)
    assert saved, done.stdout
    return done.stdout, json.loads(Path(saved[-1]).read_text())


def test_presence_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("presence", tmp_path)
    assert "requests_per_s" in out
    assert raw["requests"] > 0 and raw["errors"] == 0


def test_seed_and_history_print_figures(tmp_path: Path) -> None:
    out, raw = bench("seed", tmp_path)
    assert raw["messages"] == 2000 and "docs_per_s_last_run" in out
    if CHAT_BUILT:
        out, raw = bench("history", tmp_path)
        assert raw["page0"]["count"] > 0 and "message-count" in out


@needs_chat
def test_fanout_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("fanout", tmp_path, *([] if RABBIT else ["--no-peer"]))
    assert "deliveries_per_s" in out
    assert raw["smooth"][0]["delivered"] > 0
    if RABBIT:
        assert raw["rabbitmq"][0]["delivered"] > 0 and "Smooth / RabbitMQ" in out


@needs_chat
def test_scale_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("scale", tmp_path, timeout=175)
    assert len(raw["runs"]) == 3 and "fan-out scaling" in out


@needs_chat
def test_rooms_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("rooms", tmp_path, "--rate", "2", *([] if RABBIT else ["--no-peer"]))
    assert raw["runs"][0]["delivered"] > 0 and "many rooms" in out


@needs_chat
def test_idle_prints_figures(tmp_path: Path) -> None:
    out, raw = bench("idle", tmp_path)
    assert raw["levels"][0]["held"] == 50 and "rss_per_conn_kb" in out
