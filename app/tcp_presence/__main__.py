"""``python -m app.tcp_presence``: run the presence server until SIGTERM or SIGINT.

Reads the configuration once (``Settings.from_env``), patches the standard library for
gevent before any network client is created, builds the process
(:func:`app.tcp_presence.composition.build_presence_service`; its metrics in this process's
memory, never in a chat server's ``PROMETHEUS_MULTIPROC_DIR``) and hands it to
:func:`app.tcp_presence.server.run`. Exit status 0 after a graceful stop.
"""

from __future__ import annotations

import sys

from gevent import monkey

__all__ = ["main"]


def main() -> int:
    monkey.patch_all()
    from app.settings import Settings, export_metrics_dir

    # One process: its metrics stay in memory, whatever a launcher passed on for chat's workers
    # (prometheus_client reads this when it is imported, just below).
    export_metrics_dir(None)
    # Imported after patching, so redis and urllib get cooperative sockets.
    from app.logs import configure_logging
    from app.tcp_presence.composition import build_presence_service
    from app.tcp_presence.server import run

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return run(build_presence_service(settings))


if __name__ == "__main__":
    sys.exit(main())
