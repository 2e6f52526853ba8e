"""Backend calls per SEND: how many MongoDB, Redis and Kafka calls a chat worker makes for each message.

Not a test and not a ``python -m bench`` scenario: it prints figures and never fails on them.

It starts Smooth on the embedded stack (``bench.servers.SmoothStack``, one worker), runs the
many-rooms load once at the given size (by default one DM room of two connections at 20 SENDs/s
each: one message per group-commit round, a quiet server's shape), and reads the worker's
``/metrics`` before and after: ``smooth_backend_call_seconds_count`` per backend and operation,
divided by the SENDs made. Compare revisions by running it in a checkout of each (revisions
before the metrics issue have no ``/metrics``)::

    .venv/bin/python -m bench.calls
    .venv/bin/python -m bench.calls --conns 5000 --rate 0.2   # the many-rooms shape

``scrape`` and ``sample_value`` (a worker's ``/metrics``) are shared with ``bench.idle``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import urllib.request
from pathlib import Path

from bench import rooms
from bench.servers import SmoothStack
from bench.targets import SmoothTarget

CALLS = re.compile(r'^smooth_backend_call_seconds_count\{(?P<labels>[^}]*)\} (?P<count>\S+)$')


def scrape(port: int, token: str) -> str:
    """The Prometheus text of the worker behind ``port`` (``/metrics``, with the service token)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode("utf-8")


def backend_calls(port: int, token: str) -> dict[str, float]:
    """Every backend call counter of the worker behind ``port``, by its labels."""
    text = scrape(port, token)
    return {match["labels"]: float(match["count"]) for match in map(CALLS.match, text.splitlines()) if match}


def sample_value(port: int, token: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` of the worker behind ``port``.

    Raises:
        LookupError: the worker does not expose it (a renamed metric must not read as zero).
    """
    for line in scrape(port, token).splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ", 1)[1])
    raise LookupError(f"{name} is not among the worker's metrics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=2, help="connections, two per DM room")
    parser.add_argument("--rate", type=float, default=20.0, help="SENDs per second per connection")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, SmoothStack(Path(data_dir), mongo_in_memory=True).running() as stack:
        settings = stack.settings
        assert settings is not None
        target = SmoothTarget(stack.chat_ports, settings.redis_url, settings.jwt_secret)
        port = stack.chat_ports[0]
        before = backend_calls(port, settings.service_token)
        result = rooms.once(target, stack.pid_groups, args.conns, args.rate, args.duration, 64, 1)
        after = backend_calls(port, settings.service_token)
    sent = result["sent"]
    print(f"{sent} SENDs, {result['delivered']} deliveries, {result['lost']} lost; backend calls per SEND:")
    for labels in sorted(after):
        made = after[labels] - before.get(labels, 0.0)
        if made:
            print(f"  {made / sent:6.2f}  {labels}")


if __name__ == "__main__":
    main()
