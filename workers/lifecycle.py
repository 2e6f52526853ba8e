"""Start and stop what one chat-server worker runs in the background.

``WorkerRuntime.start()`` runs in the worker after gunicorn forked (it is
``ChatDomain.start``): it creates the MongoDB indexes (best effort), starts the Kafka
fan-out consumer and the presence lease renewer. ``stop()`` (``ChatDomain.stop``) ends
them and closes every client. ``kafka_ready`` is the readiness check: it passes only once
the consumer has a position on every partition of its topics, so nothing sent after the
process reports ready is missed by its subscribers.

``tune_gc`` sets the worker's garbage collector up for a server (see its docstring).
"""

from __future__ import annotations

import gc
import logging
from typing import Callable, Protocol, Sequence

import gevent

from app.errors import BackendUnavailable
from workers.consumers import FanoutConsumer

__all__ = ["LeaseRenewer", "WorkerRuntime", "Background", "tune_gc"]

log = logging.getLogger(__name__)


class Background(Protocol):
    """Something a worker runs beside the consumers (a greenlet of its own), started after fork."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def tune_gc(gen0_threshold: int) -> None:
    """Freeze what start-up allocated, and collect the young generation less often.

    Measured in the many-rooms bench (5,000 connections): with CPython's defaults the worker
    spent 10-20 % of its CPU in the collector, mostly full collections over ~400,000
    long-lived objects, because every per-message object that outlived two young
    collections (700 allocations apart: milliseconds) was promoted to the old generation.
    A larger threshold lets those die young; frozen start-up objects are never traversed.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


class LeaseRenewer:
    """Calls ``renew`` every ``interval_s`` in a greenlet; failures are logged, never fatal."""

    def __init__(self, renew: Callable[[], None], interval_s: float) -> None:
        self._renew = renew
        self._interval_s = interval_s
        self._greenlet: gevent.Greenlet | None = None
        self.failures = 0

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "presence-lease"

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)

    def _run(self) -> None:
        while True:
            try:
                self._renew()
            except Exception:  # noqa: BLE001 - presence down: keep trying at the same pace
                self.failures += 1
                log.debug("presence lease renewal failed", exc_info=True)
            gevent.sleep(self._interval_s)


class WorkerRuntime:
    """The ``ChatDomain.start``/``stop`` pair and the Kafka readiness check of one process."""

    def __init__(self, *, consumer: FanoutConsumer, lease: LeaseRenewer | None,
                 prepare: Callable[[], None] | None = None, closers: list[Callable[[], None]] | None = None,
                 background: Sequence[Background] = ()) -> None:
        self._consumer = consumer
        self._lease = lease
        self._prepare = prepare
        self._closers = closers or []
        self._background = list(background)
        self._started = False

    def start(self) -> None:
        if self._prepare is not None:
            gevent.spawn(self._best_effort, self._prepare)
        for task in self._background:
            task.start()
        self._consumer.start()
        self._started = True
        if self._lease is not None:
            self._lease.start()

    def stop(self) -> None:
        for task in self._background:
            self._best_effort(task.stop)
        if self._lease is not None:
            self._lease.stop()
        if self._started:
            self._consumer.stop()
        for close in self._closers:
            self._best_effort(close)

    def consumer_positioned(self) -> bool:
        """Whether the fan-out consumer reads every partition from a known position."""
        return self._started and self._consumer.ready

    def kafka_ready(self) -> None:
        """Readiness: raises until the fan-out consumer has a position on its partitions."""
        if not self._started:
            raise BackendUnavailable("kafka consumer not started")
        if not self._consumer.ready:
            raise BackendUnavailable(f"kafka consumer not positioned: {self._consumer.name}")

    @staticmethod
    def _best_effort(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:  # noqa: BLE001 - start-up extras and shutdown must not crash the worker
            log.warning("background task failed", exc_info=True)
