"""``python -m app check``: whether the configured Kafka, MongoDB and Redis are reachable and hold
what Smooth needs.

Owns :func:`check`, which looks and changes nothing:

- Kafka (``KAFKA_BOOTSTRAP_SERVERS``): the broker answers and every topic of
  ``app.chat.model.TOPICS`` exists. A topic with another partition count than
  ``KAFKA_PARTITIONS`` is a warning, not a failure: the fan-out reads every partition, and one
  room's events stay in order (keyed by room) whatever the count.
- MongoDB (``MONGO_URL``): the server answers and has every index of
  ``mongo_schema.INDEXES`` (a chat worker creates them at start; a database a worker never
  reached lacks them).
- Redis (``REDIS_URL``, and ``PRESENCE_REDIS_URL`` when it differs): it answers.

Each finding is one line (``ok``, ``warn`` or ``FAIL``, the backend, what was found; an
address without its credentials); the exit status is 1 when any is a failure. A backend that
is not configured is a failure: the chat server cannot start without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

from app.errors import ChatServerError
from app.settings import Settings

__all__ = ["Finding", "check", "failed", "OK", "WARN", "FAIL", "CHECK_TIMEOUT_MS"]

OK = "ok"
WARN = "warn"
FAIL = "FAIL"
# How long the Kafka check waits for a broker (kafka-python's own default is far longer).
CHECK_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Finding:
    status: str  # OK, WARN or FAIL
    backend: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<4} {self.backend:<8} {self.detail}"


def check(settings: Settings) -> list[Finding]:
    """Every finding about the backends ``settings`` name, Kafka first."""
    findings: list[Finding] = []
    probes = (("kafka", _kafka, settings.kafka_bootstrap_servers), ("mongodb", _mongo, settings.mongo_url),
              ("redis", _redis, settings.redis_url))
    for backend, probe, address in probes:
        try:
            findings += probe(settings)
        except ChatServerError as exc:
            findings.append(Finding(FAIL, backend, f"{_where(address)} unreachable: {exc.message}"))
    return findings


def _where(address: str) -> str:
    """The hosts of a URL or bootstrap list, without credentials (these lines get pasted around)."""
    netloc = urlsplit(address).netloc if "://" in address else address
    return netloc.rpartition("@")[2] or address


def failed(findings: list[Finding]) -> bool:
    return any(finding.status == FAIL for finding in findings)


def _kafka(settings: Settings) -> Iterator[Finding]:
    from app.backends.kafka_bus import topic_partitions

    if not settings.kafka_bootstrap_servers:
        yield Finding(FAIL, "kafka", "KAFKA_BOOTSTRAP_SERVERS is empty")
        return
    partitions = topic_partitions(settings, timeout_ms=CHECK_TIMEOUT_MS)
    yield Finding(OK, "kafka", f"{settings.kafka_bootstrap_servers} answers")
    for topic, count in partitions.items():
        if count is None:
            yield Finding(FAIL, "kafka", f"topic {topic} is missing (a chat worker creates it with "
                                         f"KAFKA_PARTITIONS={settings.kafka_partitions})")
        elif count != settings.kafka_partitions:
            yield Finding(WARN, "kafka", f"topic {topic} has {count} partitions, KAFKA_PARTITIONS is "
                                         f"{settings.kafka_partitions} (works: every partition is read)")
        else:
            yield Finding(OK, "kafka", f"topic {topic}: {count} partitions")


def _mongo(settings: Settings) -> Iterator[Finding]:
    from app.backends.mongo_messages import MongoConnection

    if not settings.mongo_url:
        yield Finding(FAIL, "mongodb", "MONGO_URL is empty")
        return
    mongo = MongoConnection(settings)
    try:
        mongo.ping()
        missing = mongo.missing_indexes()
    finally:
        mongo.close()
    yield Finding(OK, "mongodb", f"database {settings.mongo_db} answers")
    if missing:
        yield Finding(FAIL, "mongodb", f"missing indexes: {', '.join(missing)} (a chat worker creates them at start)")
    else:
        yield Finding(OK, "mongodb", "every index is there")


def _redis(settings: Settings) -> Iterator[Finding]:
    from app.backends.redis_cache import RedisMembershipCache

    if not settings.redis_url:
        yield Finding(FAIL, "redis", "REDIS_URL is empty")
        return
    urls = {"chat cache": settings.redis_url}
    if settings.effective_presence_redis_url != settings.redis_url:
        urls["presence"] = settings.effective_presence_redis_url
    for role, url in urls.items():
        cache = RedisMembershipCache(url, settings.membership_ttl_s, pool_size=1,
                                     pool_wait_s=settings.backend_pool_wait_s)
        try:
            version = cache.server_version()
        finally:
            cache.close()
        yield Finding(OK, "redis", f"{role}: Redis {version} answers")
