"""Operator command: recompute every room summary from the stored messages.

    python -m app rebuild-summaries                 # MONGO_URL / MONGO_DB as the chat server
    python -m app.backends.rebuild_summaries        # the same

Run it once on a database written before room summaries existed (until then message-count
counts from the messages: exact, slow), and after a chat server died, which can leave a
room's summary one message off (``mongo_summaries`` says why). Best run while no chat
server writes: a message stored during the rebuild can be counted twice or missed in its
room; running it again when quiet fixes that. Shows its progress on stderr, then prints what
it found per kind of room (``changed``: summaries that had drifted or were missing) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from app.backends.mongo_messages import MongoConnection
from app.errors import BackendUnavailable
from app.settings import Settings

__all__ = ["main"]


def main(argv: list[str] | None = None, prog: str = "python -m app.backends.rebuild_summaries") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if not settings.mongo_url:
        parser.error("MONGO_URL is empty: point it at the database to rebuild")
    # One aggregate reads a whole collection: far beyond a request's socket timeout.
    connection = MongoConnection(settings, socket_timeout_ms=None)
    try:
        connection.ensure_indexes()
        report = connection.rebuild_summaries(progress=_progress)
    except BackendUnavailable:
        sys.stderr.write("rebuild failed (MongoDB error above); message-count counts from the messages "
                         "until a rebuild completes: run it again\n")
        return 1
    finally:
        connection.close()
    sys.stdout.write(json.dumps(report, default=str) + "\n")
    return 0


def _progress(line: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
