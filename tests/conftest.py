"""Root fixtures: gevent patching, the timing unit, the real backend servers, and the
``integration`` marker.

The embedded Redis, Kafka-protocol broker and MongoDB-wire server are started once per test
session on free ports (the same code `make run` uses) and stopped at the end. Nothing is
skipped for lack of an environment: the servers come with requirements-dev.txt.

``pytest_collection_modifyitems`` is the one place that marks tests ``integration``
(``needs_integration_marker``): every test under tests/integration, and every other test that
uses the real servers (the ``embedded`` fixture), such as the real-backend runs of
tests/contract. ``pytest -m "not integration"`` thus runs the unit tests and the fake runs
of the contract tests only (tests/unit/test_integration_marker.py checks it).
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterable, Iterator  # noqa: E402

import pytest  # noqa: E402

from app.auth import mint_token  # noqa: E402
from app.embedded import EmbeddedStack, free_port  # noqa: E402
from app.settings import Settings  # noqa: E402

# One timing unit for waits in tests, scaled on slow machines. Tests never assert speed:
# waits are upper bounds for something that must eventually happen.
MS = 0.001 * float(os.environ.get("CHAT_TESTS_TIMEOUT_FACTOR", "1"))


INTEGRATION_DIR = Path(__file__).parent / "integration"
REAL_SERVERS_FIXTURE = "embedded"


def needs_integration_marker(path: Path, fixture_names: Iterable[str]) -> bool:
    """Whether a test at ``path`` using ``fixture_names`` starts real servers: it lives under
    tests/integration, or it uses the embedded servers."""
    return path.resolve().is_relative_to(INTEGRATION_DIR.resolve()) or REAL_SERVERS_FIXTURE in fixture_names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if needs_integration_marker(Path(str(item.path)), getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """Real Redis, Kafka-protocol broker and MongoDB-wire server on free ports."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("embedded"), mongo_in_memory=True)
    with stack.running():
        yield stack


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def make_settings(embedded: EmbeddedStack, **overrides: object) -> Settings:
    """Settings pointing at the embedded servers, with free ports and a fresh database."""
    values: dict[str, object] = dict(
        bind_host="127.0.0.1",
        chat_http_port=free_port(),
        presence_tcp_port=free_port(),
        presence_http_port=free_port(),
        kafka_bootstrap_servers=embedded.kafka_bootstrap,
        mongo_url=embedded.mongo_url,
        mongo_db=f"test_{uuid.uuid4().hex[:10]}",
        redis_url=embedded.redis_url,
        data_dir=str(embedded.data_dir),
        # Tests pipeline hundreds of SENDs on one connection; the limit has tests of its own.
        send_rate_limit=0,
    )
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture
def settings(embedded: EmbeddedStack) -> Settings:
    return make_settings(embedded)


@pytest.fixture
def token_for():
    """``token_for(user_id)``: a valid token for the dev secret."""

    def mint(user_id: int, **kwargs: object) -> str:
        return mint_token(Settings().jwt_secret, user_id, **kwargs)

    return mint
