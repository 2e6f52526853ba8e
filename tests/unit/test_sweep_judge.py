"""``bench.sweep.judge``: why a sweep point fails, in the order the checks run."""

from __future__ import annotations

from bench.sweep import judge


def _point(**overrides):
    point = {"lost": 0, "duplicates": 0, "sent": 1000, "latency_ms": {"p99": 50.0}}
    point.update(overrides)
    return point


def test_a_point_within_every_bound_passes():
    assert judge(_point(), rate=100, duration=10, bound_ms=1000) == ""


def test_deliveries_missing_when_the_drain_ended_are_undelivered_not_lost():
    assert judge(_point(lost=79_470), 100, 10, 1000) == "undelivered 79,470 (drain ended)"


def test_duplicates_senders_behind_and_latency_fail_in_that_order():
    assert judge(_point(duplicates=3, sent=10), 100, 10, 1000) == "3 duplicates"
    assert judge(_point(sent=900), 100, 10, 1000) == "senders behind: sent 900 of 1,000"
    assert judge(_point(latency_ms={"p99": 1500.0}), 100, 10, 1000) == "p99 1,500 ms > 1000"


def test_a_point_that_could_not_run_says_why():
    assert judge({"error": "connection refused"}, 100, 10, 1000) == "error: connection refused"
