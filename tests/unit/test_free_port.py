"""free_port never hands the same port out twice, even when the kernel offers it again."""

from __future__ import annotations

import socket

import pytest

from app import embedded


class _Probe:
    """A socket whose bind(0) lands on the next port of a scripted list."""

    offered: list[int] = []

    def __init__(self) -> None:
        self.port = 0

    def __enter__(self) -> "_Probe":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.offered.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_the_kernel_offers_twice_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_handed_out", set())
    monkeypatch.setattr(_Probe, "offered", [40001, 40001, 40001, 40002])
    monkeypatch.setattr(embedded.socket, "socket", _Probe)
    assert [embedded.free_port(), embedded.free_port()] == [40001, 40002]


def test_a_handed_out_port_is_bindable() -> None:
    port = embedded.free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
