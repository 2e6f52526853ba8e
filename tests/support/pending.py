"""``Deferred``: a ``Pending`` (app/contracts.py) that the test itself finishes."""

from __future__ import annotations

from gevent.event import AsyncResult

__all__ = ["Deferred"]


class Deferred:
    """Finished by ``succeed()`` or ``fail(exc)``; ``wait()`` gives up after ``timeout`` seconds."""

    def __init__(self, name: str = "", *, timeout: float) -> None:
        self.name = name
        self._timeout = timeout
        self._result: AsyncResult = AsyncResult()

    def succeed(self) -> None:
        self._result.set(None)

    def fail(self, exc: BaseException) -> None:
        self._result.set_exception(exc)

    def wait(self) -> None:
        self._result.get(timeout=self._timeout)
