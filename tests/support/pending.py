"""``Deferred``: a ``Pending`` (app/contracts.py) that the test itself finishes."""

from __future__ import annotations

from gevent.event import AsyncResult, Event

__all__ = ["Deferred"]


class Deferred:
    """Finished by ``succeed()`` or ``fail(exc)``; ``wait()`` gives up after ``timeout`` seconds.

    ``collected`` is set once a ``wait()`` has returned or raised: whoever waited (the
    server's acknowledger) has taken the outcome, so a test can wait for that instead of
    sleeping.
    """

    def __init__(self, name: str = "", *, timeout: float) -> None:
        self.name = name
        self._timeout = timeout
        self._result: AsyncResult = AsyncResult()
        self.collected = Event()

    def succeed(self, receipt_headers: dict[str, str] | None = None) -> None:
        """Finish it; ``receipt_headers`` are what ``wait()`` returns (the RECEIPT's added headers)."""
        self._result.set(receipt_headers)

    def fail(self, exc: BaseException) -> None:
        self._result.set_exception(exc)

    def wait(self) -> dict[str, str] | None:
        try:
            return self._result.get(timeout=self._timeout)  # type: ignore[no-any-return]
        finally:
            self.collected.set()
