"""The chat-side presence client (app.presence_client) against a live presence process,
a dead port, a server that never answers, and a presence server that comes back
(issue 4 item 6: degraded mode, circuit breaker, ``on_recovered``).
"""

from __future__ import annotations

import socket
import uuid
from typing import Any, Iterator

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from app.embedded import EmbeddedStack, free_port
from app.errors import BackendUnavailable, BadRequest
from app.presence_client import CircuitBreaker, LogoutResult, Move, PresenceClient
from app.settings import Settings
from tests.conftest import MS
from tests.support.presence import fresh_user_ids, http_json, presence_settings
from tests.support.processes import ServiceProcess, presence_server_process

MAX_LINE = 2048


@pytest.fixture(scope="module")
def presence(embedded: EmbeddedStack, log_dir: Any) -> Iterator[ServiceProcess]:
    settings = presence_settings(embedded, presence_max_line_bytes=MAX_LINE, presence_pool_size=2)
    process = presence_server_process(settings, log_dir, name="presence-client").start()
    yield process
    process.stop()


@pytest.fixture
def client(presence: ServiceProcess) -> Iterator[PresenceClient]:
    presence_client = PresenceClient(presence.settings)
    yield presence_client
    presence_client.close()


def online(settings: Settings) -> set[int]:
    status, body = http_json(f"http://127.0.0.1:{settings.presence_http_port}/presence-server/user-state")
    assert status == 200
    return {int(user) for user in body}


# -- Against a live server ----------------------------------------------------------------------------


def test_every_call_against_a_live_server(client: PresenceClient) -> None:
    user, other, community = fresh_user_ids(3)
    node = f"client-{uuid.uuid4().hex[:8]}"
    assert client.login(f"a{user}", user, node) is True
    assert client.login(f"b{user}", user, node) is False
    assert client.login(f"a{other}", other, node) is True
    assert client.move(user, f"a{user}", "c-12") == Move("home", "c-12")
    assert client.move(other, f"a{other}", "r-4") == Move("home", "r-4")
    assert client.notify_targets("c-12", [user, other]) == [other]
    assert client.notify_targets("r-4", [user, other]) == [user]
    assert client.before_enter(user, community) == "{}"
    assert client.enter(user, community, 7) == f'{{"7":["{user}"]}}'
    assert client.enter(other, community, 7) == f'{{"7":["{user}","{other}"]}}'
    client.renew_lease(node)
    assert client.logout(f"a{user}", node) == LogoutResult(user, f"com{community},c-7", False)
    assert client.logout(f"b{user}", node) == LogoutResult(user, "home", True)
    assert client.logout(f"b{user}", node) == LogoutResult(None, None, False)
    assert client.before_enter(other, community) == f'{{"7":["{other}"]}}'
    client.logout(f"a{other}", node)


def test_refused_requests_raise_bad_request_and_do_not_trip_the_breaker(client: PresenceClient) -> None:
    (user,) = fresh_user_ids(1)
    with pytest.raises(BadRequest):
        client.notify_targets("home", [user])
    with pytest.raises(BadRequest):
        client.move(user, "s1", "com3,c-7")  # only enter sets a voice location
    with pytest.raises(BadRequest):
        client.login("not a session id", user, "n1")
    assert client.breaker.failures == 0
    client.renew_lease("still-usable")


def test_sync_is_chunked_to_fit_the_line_limit(client: PresenceClient, presence: ServiceProcess) -> None:
    users = fresh_user_ids(100)
    node = f"sync-{uuid.uuid4().hex[:8]}"
    sessions = {f"session-{user}": user for user in users}
    assert len(str(sessions)) > MAX_LINE  # one line would be refused as too long
    client.sync(node, sessions)
    assert set(users) <= online(presence.settings)
    client.sync(node, {f"session-{users[0]}": users[0]})
    assert set(users) & online(presence.settings) == {users[0]}
    client.sync(node, {})
    assert set(users) & online(presence.settings) == set()


def test_many_greenlets_share_the_pool(client: PresenceClient, presence: ServiceProcess) -> None:
    users = fresh_user_ids(20)
    node = f"pool-{uuid.uuid4().hex[:8]}"
    jobs = [gevent.spawn(client.login, f"p{user}", user, node) for user in users]
    gevent.joinall(jobs, raise_error=True, timeout=30)
    assert [job.value for job in jobs] == [True] * 20
    assert len(client._idle) <= presence.settings.presence_pool_size  # never more connections than the pool
    client.sync(node, {})


# -- Degraded mode -------------------------------------------------------------------------------------


def test_dead_port_raises_backend_unavailable_and_opens_the_breaker(embedded: EmbeddedStack) -> None:
    settings = presence_settings(embedded, presence_tcp_port=free_port(), presence_timeout_s=30.0)
    client = PresenceClient(settings, breaker=CircuitBreaker(threshold=2, probe_interval_s=60))
    try:
        # Refused connections fail at once, far inside the 30 s timeout.
        with gevent.Timeout(10):
            for _ in range(2):
                with pytest.raises(BackendUnavailable):
                    client.login("s1", 5, "n1")
            assert client.breaker.is_open
            for _ in range(100):
                with pytest.raises(BackendUnavailable, match="circuit open"):
                    client.renew_lease("n1")
    finally:
        client.close()


class SilentServer:
    """Accepts connections and never answers: the worst case for a caller."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server = StreamServer(("127.0.0.1", 0), self._handle)

    def _handle(self, sock: socket.socket, address: Any) -> None:
        self.accepted += 1
        gevent.sleep(60)

    def __enter__(self) -> "SilentServer":
        self._server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.stop(timeout=0.1)

    @property
    def port(self) -> int:
        return int(self._server.server_port)


def test_silent_server_costs_a_timeout_only_until_the_breaker_opens(embedded: EmbeddedStack) -> None:
    with SilentServer() as silent:
        settings = presence_settings(embedded, presence_tcp_port=silent.port, presence_timeout_s=0.3)
        client = PresenceClient(settings, breaker=CircuitBreaker(threshold=2, probe_interval_s=1.0))
        try:
            for _ in range(2):
                with pytest.raises(BackendUnavailable):
                    client.renew_lease("n1")
            assert silent.accepted == 2
            # Open: 50 calls inside one probe interval cost no connection and no timeout.
            with gevent.Timeout(0.25):
                for _ in range(50):
                    with pytest.raises(BackendUnavailable):
                        client.renew_lease("n1")
            assert silent.accepted == 2
            # After the interval exactly one probe goes out, even with many callers at once.
            gevent.sleep(1.0 + 100 * MS)
            callers = [gevent.spawn(client.renew_lease, "n1") for _ in range(10)]
            gevent.joinall(callers, timeout=10)
            assert all(isinstance(caller.exception, BackendUnavailable) for caller in callers)
            assert silent.accepted == 3
        finally:
            client.close()


def test_recovery_fires_on_recovered_and_sync_restores_sessions(embedded: EmbeddedStack, log_dir: Any) -> None:
    settings = presence_settings(embedded, presence_tcp_port=free_port())
    recovered = Event()
    client = PresenceClient(settings, on_recovered=recovered.set,
                            breaker=CircuitBreaker(threshold=2, probe_interval_s=0.2))
    process: ServiceProcess | None = None
    try:
        (user,) = fresh_user_ids(1)
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                client.login(f"r{user}", user, "recovering-node")
        assert client.breaker.is_open and not recovered.is_set()
        process = presence_server_process(settings, log_dir, name="presence-recovery").start()
        deadline = gevent.Timeout(10_000 * MS)
        deadline.start()
        try:
            while True:
                try:
                    client.renew_lease("recovering-node")
                    break
                except BackendUnavailable:
                    gevent.sleep(0.05)
        finally:
            deadline.close()
        assert recovered.wait(5_000 * MS)
        assert not client.breaker.is_open
        client.sync("recovering-node", {f"r{user}": user})  # what the chat node does on recovery
        assert user in online(settings)
    finally:
        client.close()
        if process is not None:
            process.stop()


def test_pooled_connection_survives_a_presence_restart(embedded: EmbeddedStack, log_dir: Any) -> None:
    settings = presence_settings(embedded, presence_pool_size=1)
    recovered = Event()
    client = PresenceClient(settings, on_recovered=recovered.set)
    process = presence_server_process(settings, log_dir, name="presence-restart").start()
    try:
        client.renew_lease("restart-node")
        assert len(client._idle) == 1
        process.stop()
        process = presence_server_process(settings, log_dir, name="presence-restart").start()
        # The pooled connection is dead; the client retries once on a fresh one.
        client.renew_lease("restart-node")
        assert client.breaker.failures == 0
        assert not recovered.wait(200 * MS)
    finally:
        client.close()
        process.stop()


# -- The breaker on its own -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_probes_once_per_interval() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, probe_interval_s=1.0, clock=clock)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.allow() and not breaker.is_open
    breaker.record_failure()
    assert breaker.is_open
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else while the probe is out
    breaker.record_failure()
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()
    assert breaker.record_success() is True
    assert not breaker.is_open and breaker.allow()
    assert breaker.record_success() is False
