"""TokenBucket (app/stomp/ratelimit.py): the per-connection SEND rate limit, on an injected clock."""

import pytest

from app.stomp.ratelimit import TokenBucket


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_capacity_passes_then_the_next_is_refused():
    bucket = TokenBucket(120, 60.0, clock=Clock())
    assert all(bucket.take() for _ in range(120))
    assert not bucket.take()


def test_tokens_come_back_at_capacity_per_window():
    clock = Clock()
    bucket = TokenBucket(120, 60.0, clock=clock)
    for _ in range(120):
        bucket.take()
    assert bucket.retry_after() == pytest.approx(0.5)
    clock.now += 0.49
    assert not bucket.take()
    clock.now += 0.02
    assert bucket.take() and not bucket.take()
    clock.now += 30.0
    assert sum(bucket.take() for _ in range(100)) == 60


def test_a_refused_event_takes_nothing():
    clock = Clock()
    bucket = TokenBucket(2, 2.0, clock=clock)
    bucket.take(), bucket.take()
    for _ in range(1000):
        assert not bucket.take()
    clock.now += 1.0
    assert bucket.take()


def test_idle_time_never_saves_more_than_capacity():
    clock = Clock()
    bucket = TokenBucket(5, 1.0, clock=clock)
    clock.now += 3600
    assert sum(bucket.take() for _ in range(10)) == 5


def test_a_clock_that_goes_backwards_adds_nothing():
    clock = Clock()
    bucket = TokenBucket(1, 10.0, clock=clock)
    assert bucket.take()
    clock.now -= 100
    assert not bucket.take()
    clock.now += 5
    assert not bucket.take()  # 5 s after the step back: half a token
    clock.now += 5
    assert bucket.take()


@pytest.mark.parametrize("capacity, window", [(0, 60.0), (10, 0.0), (10, -1.0)])
def test_a_bucket_that_could_never_pass_is_refused(capacity, window):
    with pytest.raises(ValueError):
        TokenBucket(capacity, window, clock=Clock())
