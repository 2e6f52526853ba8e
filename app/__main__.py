"""``python -m app <command>``: the operator's one entry point.

Commands (``python -m app <command> --help`` for each):

- ``check``: are the configured Kafka, MongoDB and Redis reachable, with the topics and
  indexes Smooth needs (app/check.py)? Exit status 1 when not.
- ``token --user N``: mint a token signed with ``JWT_SECRET`` (the dev key by default).
- ``service-token``: the running dev stack's service token (``X-Service-Token``).
- ``rebuild-summaries``: recount every room summary from the stored messages, with progress.
- ``devstack``: the whole system on embedded servers, supervised (what ``make run`` runs).
- ``settings``: every setting, its default and meaning (the README's table).

Each command reads the settings from the environment, as the servers do, and imports only
what it needs. The older entry points (``python -m app.auth mint``, ``python -m
app.backends.rebuild_summaries``, ``python -m app.devstack``) still work; this module calls them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

__all__ = ["main"]

PROG = "python -m app"


def _check(args: argparse.Namespace) -> int:
    _single_process()
    # kafka-python logs every retry of its bootstrap at ERROR; the finding says it once.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    from app.check import check, failed
    from app.settings import Settings

    findings = check(Settings.from_env())
    for finding in findings:
        sys.stdout.write(f"{finding}\n")
    bad = failed(findings)
    sys.stdout.write("not ready: see FAIL above\n" if bad else "ready\n")
    return 1 if bad else 0


def _token(args: argparse.Namespace) -> int:
    from app import auth

    return auth.main(["mint", "--user", str(args.user), "--lifetime", str(args.lifetime)])


def _service_token(args: argparse.Namespace) -> int:
    from app import devstack

    return devstack.main(["service-token"])


def _rebuild_summaries(args: argparse.Namespace) -> int:
    _single_process()
    from app.backends import rebuild_summaries

    return rebuild_summaries.main([], prog=f"{PROG} rebuild-summaries")


def _devstack(args: argparse.Namespace) -> int:
    from app import devstack

    return devstack.main([])


def _settings(args: argparse.Namespace) -> int:
    from app.settings import markdown_table

    sys.stdout.write(markdown_table() + "\n")
    return 0


def _single_process() -> None:
    """For a command that talks to the backends: its logs as the servers' (the clients' own words on
    a failure), its metrics (backend calls) in its own memory, never in a chat server's directory."""
    from app.logs import configure_logging
    from app.settings import Settings, export_metrics_dir

    export_metrics_dir(None)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)


def _parser() -> argparse.ArgumentParser:
    from app.auth import DEFAULT_LIFETIME_S

    parser = argparse.ArgumentParser(prog=PROG, description="Smooth's operator commands. Settings come from the "
                                     "environment (see README, Configuration).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def command(name: str, run: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    command("check", _check, "check that Kafka, MongoDB and Redis are reachable and have the topics and indexes "
                             "Smooth needs; exit status 1 if not")
    token = command("token", _token, "mint a user token signed with JWT_SECRET (the dev key by default)")
    token.add_argument("--user", type=int, required=True, help="numeric user id (the `id` claim)")
    token.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME_S, help="seconds until exp")
    command("service-token", _service_token, "print the running dev stack's service token (X-Service-Token)")
    command("rebuild-summaries", _rebuild_summaries, "recount every room summary from the stored messages "
                                                     "(progress on stderr, the report as JSON on stdout)")
    command("devstack", _devstack, "start the whole system on embedded servers and supervise it (make run)")
    command("settings", _settings, "print every setting, its default and meaning (Markdown)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
