"""``RateLimitedLog`` (issue 14 item 4): a failure that repeats per request is logged once
per burst, with a count of what was held back, and never with a traceback."""

from __future__ import annotations

import logging

from app.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_one_line_then_one_line_per_interval_with_the_count(caplog):
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.burst"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.burst"):
        for _ in range(5_000):
            limited.warning("redis unavailable: %s", "Connection refused")
        clock.now += 10.0
        limited.warning("redis unavailable: %s", "Connection refused")
    assert [record.getMessage() for record in caplog.records] == [
        "redis unavailable: Connection refused",
        "redis unavailable: Connection refused (4999 more like it in the last 10 s)",
    ]
    assert all(record.exc_info is None for record in caplog.records)


def test_each_site_has_its_own_budget(caplog):
    clock = Clock()
    first = RateLimitedLog(logging.getLogger("test.sites"), clock=clock)
    second = RateLimitedLog(logging.getLogger("test.sites"), clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.sites"):
        first.warning("a")
        second.error("b")
        first.warning("a")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", "a"), ("ERROR", "b")]
    assert first.suppressed == 1
